"""A matsciml plugin whose factories raise (test fixture)."""
