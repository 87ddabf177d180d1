"""Exceptions raised by daskgmm.

Every class also derives from the built-in exception it resembles, so code written
for scikit-learn (``except ValueError``) or for files (``except FileNotFoundError``)
keeps working. (Prediction before ``fit`` raises scikit-learn's ``NotFittedError``.)
Messages say what was wrong, where, and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ArrayNamespaceError",
    "CheckpointError",
    "ClusterConnectionError",
    "ClusterLostError",
    "ClusterStalledError",
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
    "OutputExistsError",
    "OutputWriteError",
    "PerformanceWarning",
    "StorageError",
    "UnsafeOutputError",
    "UnsafeOverwriteError",
    "UsageError",
    "WorkerDiedError",
]


class DaskGMMError(Exception):
    """Base class of every error daskgmm raises on purpose."""

    def __reduce__(self) -> tuple:
        # Rebuilt from its arguments (an error raised on a Dask worker travels pickled;
        # tblib's reducer cannot rebuild a class deriving from both ValueError and OSError).
        return type(self), self.args, self.__dict__ or None


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
    """A saved model directory is damaged, incomplete or not a daskgmm model.

    ``problem`` says what was refused, without the location (None if not set)."""

    problem: str | None = None


class CheckpointError(DaskGMMError, ValueError):
    """A checkpoint is damaged or belongs to other data or another configuration."""


class DegenerateComponentError(DaskGMMError, ValueError):
    """A mixture component collapsed: its covariance is not positive definite or it lost
    all its samples."""


class ClusterConnectionError(DaskGMMError, ConnectionError):
    """The Dask scheduler cannot be reached, or the cluster has no workers."""


class WorkerDiedError(DaskGMMError, RuntimeError):
    """Every Dask worker that tried a task died (usually by exceeding its memory limit)."""


class OutputExistsError(DaskGMMError, FileExistsError):
    """An output already exists and replacing it was not asked for."""


class UnsafeOutputError(DaskGMMError, ValueError):
    """An output location equals, contains or lies inside an input (the data, the model,
    the configuration file, the checkpoint directory): writing it could destroy the
    input, so it is refused before any work."""


class OutputWriteError(DaskGMMError, OSError):
    """An output or a checkpoint cannot be written: the disk is full, the location is
    read-only, or permission is denied."""


class ClusterStalledError(DaskGMMError, TimeoutError):
    """Every worker of the cluster has been paused, or the cluster has had no worker,
    for longer than the configured timeout."""


class ClusterLostError(ClusterConnectionError):
    """The connection to the Dask scheduler was lost during a run."""


class UsageError(DaskGMMError, ValueError):
    """A command-line argument is invalid (named by its flag, e.g. ``--chunk-rows``)."""


class PerformanceWarning(UserWarning):
    """The data's chunking or the settings will make a fit much slower than it could be."""


class IncompleteStoreError(DataSourceError):
    """A chunked store's writer did not finish: the end of a Zarr array is absent, an
    HDF5 dataset has chunks never written (they would read as the fill value); pass
    ``allow_missing_chunks=True`` if that is intended."""


class MissingDependencyError(DaskGMMError, ImportError):
    """An optional library needed for this input or output (e.g. ``s3fs`` for ``s3://``
    URLs) is not installed; the message names the extra to install."""


class UnsafeOverwriteError(OutputExistsError):
    """An output location holds something daskgmm did not write, so it is not replaced."""


class ArrayNamespaceError(DaskGMMError, NotImplementedError):
    """An array of an array-API namespace daskgmm does not compute with (it computes with
    NumPy and Dask), given while scikit-learn's ``array_api_dispatch`` is enabled."""


class StorageError(DaskGMMError, OSError):
    """A filesystem or object store refused or failed an operation (unreachable
    endpoint, no such bucket, access denied, throttling, a full disk...); the message
    names the location and the setting it came from."""
