"""The statistics engine: per-chunk kernels, passes over row chunks, the EM driver.

Nothing here knows about estimators. The kernels are plain NumPy; :mod:`.passes` is the
only module that builds Dask graphs for a fit.
"""
