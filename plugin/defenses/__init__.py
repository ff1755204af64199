"""Defense plugins: each module is one defense, the shared mechanics live in :mod:`.base`."""
