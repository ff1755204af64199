"""``locrob bench``: speed measured side by side in one run, reported as ratios.

One module per benchmark (:mod:`~locrob.bench.alpha`, :mod:`~locrob.bench.separation`,
:mod:`~locrob.bench.train`, :mod:`~locrob.bench.corruptions`), each with its measurement and
its table, timed by :func:`locrob.runtime.best_rate` and written by :func:`locrob.markdown.table`.
"""
