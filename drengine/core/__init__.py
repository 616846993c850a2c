"""Types and errors shared by every layer; imports nothing else from drengine."""
