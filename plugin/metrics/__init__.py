"""Metric plugins: each module is one metric, the shared mechanics live in :mod:`.base`."""
