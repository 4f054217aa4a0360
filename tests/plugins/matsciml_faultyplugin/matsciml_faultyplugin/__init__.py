"""A matsciml plugin whose entry points fail in every way a hook can (test fixture)."""
