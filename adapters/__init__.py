"""Thin wrappers of outside frameworks (RobustBench, torchattacks, ART).

Each adapter imports its framework lazily, so ``locrob`` itself imports without them.
"""
