"""Reference architectures and the model sources that build or load them."""
