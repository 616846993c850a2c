"""Policy files: validated models of what to back up, when, and how long to keep it."""
