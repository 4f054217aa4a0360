"""A tiny third-party matsciml plugin (test fixture)."""
