"""Models: the model card schema, network loaders and the bundled cards."""
