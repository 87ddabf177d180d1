"""Reading arrays (``open_array`` and its readers), atomic writes, synthetic data."""

from daskgmm.io.readers import (
    DEFAULT_TARGET_CHUNK_BYTES,
    ArraySource,
    HDF5Reader,
    HDF5Slicer,
    NpyReader,
    NpySlicer,
    Reader,
    SklearnDatasetReader,
    ZarrDirectoryReader,
    ZarrZipReader,
    describe_array,
    get_reader,
    list_readers,
    open_array,
    register_reader,
)

__all__ = [
    "DEFAULT_TARGET_CHUNK_BYTES",
    "ArraySource",
    "HDF5Reader",
    "HDF5Slicer",
    "NpyReader",
    "NpySlicer",
    "Reader",
    "SklearnDatasetReader",
    "ZarrDirectoryReader",
    "ZarrZipReader",
    "describe_array",
    "get_reader",
    "list_readers",
    "open_array",
    "register_reader",
]
