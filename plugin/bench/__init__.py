"""``locrob bench``: speed measured side by side in one run, reported as ratios.

One module per benchmark (:mod:`~locrob.bench.alpha`, :mod:`~locrob.bench.separation`,
:mod:`~locrob.bench.train`, :mod:`~locrob.bench.corruptions`, :mod:`~locrob.bench.bound`,
:mod:`~locrob.bench.distributed`), each with its measurement and its table, timed by
:func:`locrob.runtime.best_rate` (or by the methods' own clocks) and written by
:func:`locrob.markdown.table`; and one static reading of the Triton kernels as an H100/H200
would run them (:mod:`~locrob.bench.kernels`), for machines without one.
"""
