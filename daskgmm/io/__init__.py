"""Reading arrays (``open_array`` and its readers), locations, atomic outputs, synthetic
data."""

from daskgmm.io.chunking import DEFAULT_CHUNK_BYTES, default_chunk_rows
from daskgmm.io.locations import Location, parse_location, redact_options, redact_url
from daskgmm.io.readers import (
    ArraySource,
    HDF5Reader,
    HDF5Slicer,
    NpyRangeSlicer,
    NpyReader,
    ParquetReader,
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

__all__ = ["DEFAULT_CHUNK_BYTES", "ArraySource", "HDF5Reader", "HDF5Slicer", "Location",
           "NpyRangeSlicer", "NpyReader", "ParquetReader", "Reader", "SklearnDatasetReader",
           "ZarrDirectoryReader", "ZarrZipReader", "default_chunk_rows", "describe_array",
           "get_reader", "list_readers", "open_array", "parse_location", "redact_options",
           "redact_url", "register_reader"]
