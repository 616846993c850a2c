"""What is backed up and how it comes back. ``files`` is the first source."""
