"""Training through Lightning: data module, run configuration, train and evaluate."""
