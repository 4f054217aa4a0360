"""A matsciml plugin that cannot be imported (test fixture)."""
