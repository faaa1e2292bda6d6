"""The interpreter and the model: what the runtime offers (hello), warm workers, loading a model and reading a
pretrained folder's config."""
