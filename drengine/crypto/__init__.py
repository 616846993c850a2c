"""Keys, authenticated encryption and keyed chunk IDs. Knows nothing of storage."""
