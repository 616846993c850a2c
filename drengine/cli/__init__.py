"""The command line: parse, call one operation, render. One module per command."""
