"""scikit-learn's bundled data sets as ``sklearn:NAME`` pseudo-paths (``sklearn:iris``)."""

from __future__ import annotations

import os

import numpy as np

from daskgmm.errors import DataNotFoundError, DataSourceError
from daskgmm.io.locations import Location
from daskgmm.io.reader_base import ArraySource, Reader

__all__ = ["SKLEARN_PREFIX", "SklearnDatasetReader"]

SKLEARN_PREFIX = "sklearn:"
_SKLEARN_DATASETS = {
    "iris": "load_iris",
    "wine": "load_wine",
    "digits": "load_digits",
    "breast_cancer": "load_breast_cancer",
}


class SklearnDatasetReader(Reader):
    """The small data sets shipped with scikit-learn as ``sklearn:NAME``
    (``iris``, ``wine``, ``digits``, ``breast_cancer``); nothing is downloaded."""

    name = "sklearn"
    description = "scikit-learn bundled dataset (sklearn:iris, sklearn:wine, ...)"
    pseudo_paths = True

    def can_open(self, location: Location | str | os.PathLike) -> bool:
        text = location.original if isinstance(location, Location) else os.fspath(location)
        return text.lower().startswith(SKLEARN_PREFIX)

    def locate(self, location: Location, dataset: str | None, *,
               allow_missing_chunks: bool = False,
               ndims: tuple[int, ...] = (2,)) -> ArraySource:
        path = location.original
        name = path[len(SKLEARN_PREFIX):].strip().lower()
        if name not in _SKLEARN_DATASETS:
            raise DataNotFoundError(
                f"No scikit-learn bundled dataset {name!r} (from {path!r}); available: "
                + ", ".join(SKLEARN_PREFIX + n for n in _SKLEARN_DATASETS) + "."
            )
        if dataset:
            raise DataSourceError(
                f"{path!r} is a single array, so there is no dataset {dataset!r} inside "
                "it; pass dataset=None."
            )
        import sklearn.datasets

        data = np.ascontiguousarray(
            getattr(sklearn.datasets, _SKLEARN_DATASETS[name])().data, dtype=np.float64)
        return ArraySource(array=data, shape=tuple(data.shape), dtype=data.dtype,
                           where=repr(path), native_row_chunk=data.shape[0],
                           token=(name,))
