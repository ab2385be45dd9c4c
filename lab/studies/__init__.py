"""One study a file: what it asks, the runs that answer it, its tables and figures (python reproduce.py NAME)."""
