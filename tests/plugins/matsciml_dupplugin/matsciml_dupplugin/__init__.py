"""A matsciml plugin whose model name clashes with another plugin's (test fixture)."""
