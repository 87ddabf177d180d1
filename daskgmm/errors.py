"""Exceptions raised by daskgmm.

Every class also derives from the built-in exception it resembles, so code written
for scikit-learn (``except ValueError``) or for files (``except FileNotFoundError``)
keeps working. (Prediction before ``fit`` raises scikit-learn's ``NotFittedError``.)
Messages say what was wrong, where, and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ClusterConnectionError",
    "ConfigError",
    "DaskGMMError",
    "DataNotFoundError",
    "DataSourceError",
    "DegenerateComponentError",
    "IncompleteStoreError",
    "InvalidDataError",
    "InvalidParameterError",
    "MissingDependencyError",
    "ModelFormatError",
    "NonFiniteDataError",
    "PerformanceWarning",
    "UnsafeOverwriteError",
    "WorkerDiedError",
]


class DaskGMMError(Exception):
    """Base class of every error daskgmm raises on purpose."""


class InvalidDataError(DaskGMMError, ValueError):
    """The data has the wrong shape, dtype or content for the requested operation."""


class InvalidParameterError(DaskGMMError, ValueError):
    """An estimator parameter (e.g. ``weights_init``) has the wrong shape or values."""


class NonFiniteDataError(InvalidDataError):
    """The data holds NaN or infinite values (found while passing over a chunk)."""


class DataSourceError(DaskGMMError, ValueError):
    """A file or store cannot be opened or read as a 2-D numeric array."""


class DataNotFoundError(DataSourceError, FileNotFoundError):
    """A file, store or dataset inside a file does not exist."""


class ConfigError(DaskGMMError, ValueError):
    """A run configuration (YAML file or ``--set`` override) is invalid."""


class ModelFormatError(DaskGMMError, ValueError):
    """A saved model directory is damaged, incomplete or not a daskgmm model."""


class CheckpointError(DaskGMMError, ValueError):
    """A checkpoint is damaged or belongs to other data or another configuration."""


class DegenerateComponentError(DaskGMMError, ValueError):
    """A mixture component collapsed: its covariance is not positive definite or it lost
    all its samples."""


class ClusterConnectionError(DaskGMMError, ConnectionError):
    """The Dask scheduler cannot be reached, or the cluster has no workers."""


class WorkerDiedError(DaskGMMError, RuntimeError):
    """Every Dask worker that tried a task died (usually by exceeding its memory limit)."""


class PerformanceWarning(UserWarning):
    """The data's chunking or the settings will make a fit much slower than it could be."""


class IncompleteStoreError(DataSourceError):
    """A chunked store has chunks that were never written (they would read as the fill
    value); pass ``allow_missing_chunks=True`` if that is intended."""


class MissingDependencyError(DaskGMMError, ImportError):
    """An optional library needed for this input or output (e.g. ``s3fs`` for ``s3://``
    URLs) is not installed; the message names the extra to install."""


class UnsafeOverwriteError(DaskGMMError, FileExistsError):
    """An output location holds something daskgmm did not write, so it is not replaced."""
