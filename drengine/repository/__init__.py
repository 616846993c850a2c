"""The on-storage format: the only layer that knows object names and layout."""
