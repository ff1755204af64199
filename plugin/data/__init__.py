"""Data sets: the :class:`ImageData` container and the built-in dataset sources."""
