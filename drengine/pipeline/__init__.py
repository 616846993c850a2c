"""The streaming engine: chunk, identify, dedup, compress, encrypt, pack, upload, and back."""
