"""Helpers of daskgmm's benchmark scripts (``scripts/bench.py``, ``scripts/bench_stepwise.py``).

Modules
-------
util      logging, statistics of timings, machine and version descriptions
data      datasets: Zarr stores on disk, in-memory mixtures, initial parameters
cluster   LocalClusters, persisting, worker memory
fits      timing one fit of daskgmm or scikit-learn (an observer records the iterations)
flops     the machine's square-GEMM speed and the flops of each covariance type's E-step
report    table rows, bench.json and bench.md
context   what the sections of one run share (clusters, datasets, the GEMM speed)
sections  one module per measurement of ``scripts/bench.py``

The scripts put their own directory on ``sys.path`` (Python does that for a script), so
``import benchlib`` works from any working directory.
"""
