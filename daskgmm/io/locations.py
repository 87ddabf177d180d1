"""Where data lives: one :class:`Location` type for local paths and fsspec URLs.

A :class:`Location` is a filesystem and a path in it, so that readers, writers and
guards address storage one way. Credentials never leave this module readable
(:attr:`Location.display`, :func:`redact_options`, :func:`scrub_secrets`), and
:func:`storage_errors` turns a storage failure into one line a person can act on."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from daskgmm.errors import DaskGMMError, DataSourceError, MissingDependencyError, StorageError

__all__ = ["Location", "StoragePath", "describe_failure", "is_url", "parse_location",
           "redact_options", "redact_url", "relation", "scrub_secrets", "storage_errors"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://|::")
_MASK = "***"
# Storage options whose values are shown (in report.json); every other value is masked,
# whatever its key is called (headers, cookies, tokens under any name).
_HARMLESS = frozenset({"endpoint_url", "region_name", "anon", "use_ssl", "verify",
                       "requester_pays", "client_kwargs", "config_kwargs", "project",
                       "account_name", "default_block_size", "default_cache_type"})
# protocol -> (package, extra), for the message of a missing filesystem library
_EXTRAS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"),
           "gcs": ("gcsfs", "gcs"), "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"),
           "abfss": ("adlfs", "azure"), "adl": ("adlfs", "azure"),
           "http": ("aiohttp", "http"), "https": ("aiohttp", "http")}
_UNLISTABLE = frozenset({"http", "https", "sklearn"})  # no way to list a "directory" there
_SECRETS: set[str] = set()  # every secret a location of this process has seen


def is_url(path: Any) -> bool:
    """Whether ``path`` is a URL (``scheme://...`` or a chained ``a::b://...``)."""
    return isinstance(path, str) and bool(_URL.search(path))


def redact_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``storage_options`` as they may be shown: the values of known harmless keys
    (endpoint, region, ``anon``...; URLs redacted), every other value ``***``."""
    out: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if isinstance(value, Mapping):
            out[key] = redact_options(value) if key in _HARMLESS else _MASK
        elif key in _HARMLESS and isinstance(value, str | bool | int | float | None):
            out[key] = redact_url(value) if isinstance(value, str) else value
        else:
            out[key] = _MASK
    return out


def redact_url(url: Any) -> Any:
    """``url`` with its password (or user token) and every query value masked."""
    if not isinstance(url, str) or "://" not in url:
        return url
    if "::" in url:
        return "::".join(redact_url(part) for part in url.split("::"))
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/@]*@", f"//{_MASK}@", url.split("?", 1)[0])
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = (f"{userinfo.split(':', 1)[0]}:{_MASK}@{host}" if ":" in userinfo
                  else f"{_MASK}@{host}")
    query = "&".join(f"{k}={_MASK}" for k, _ in parse_qsl(parts.query,
                                                          keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _remember_secrets(url: str, options: Mapping[str, Any]) -> None:
    for part in url.split("::"):
        with contextlib.suppress(ValueError):
            parts = urlsplit(part)
            userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
            _SECRETS.update(s for s in userinfo.split(":") if s)
            _SECRETS.update(v for _, v in parse_qsl(parts.query, keep_blank_values=True))

    def walk(value: Any, key: str | None) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, str(k))
        elif key not in _HARMLESS and isinstance(value, str | int | float):
            _SECRETS.add(str(value))

    walk(options, None)


def scrub_secrets(text: str) -> str:
    """``text`` with every secret seen by a location of this process masked (URLs in
    it redacted too)."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, _MASK)
    return re.sub(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"]+",
                  lambda m: redact_url(m.group(0)), text)


def _protocol_of(url: str) -> str:
    first = url.split("::")[0]
    return first.split("://", 1)[0].lower() if "://" in first else first.lower()


class Location:
    """A path in a filesystem (fsspec's ``LocalFileSystem`` for local paths):
    ``original`` (what the user gave, credentials included), ``storage_options``,
    ``protocol`` (``"file"`` for local paths) and ``path`` (absolute locally, ``bucket/key``
    in a store)."""

    __slots__ = ("_fs", "original", "path", "protocol", "storage_options")

    def __init__(self, original: str | os.PathLike[str],
                 storage_options: Mapping[str, Any] | None = None, *,
                 _path: str | None = None, _fs: Any = None) -> None:
        text = os.fspath(original)
        self.original, self._fs = text, _fs
        self.storage_options = dict(storage_options or {})
        self.protocol = _protocol_of(text) if is_url(text) else "file"
        if text.startswith("sklearn:"):  # a data set shipped with scikit-learn
            self.protocol, self.path = "sklearn", text
            return
        if self.protocol in ("file", "local") and "::" not in text:
            self.protocol, self.storage_options = "file", {}
            local = urlsplit(text).path or "/" if is_url(text) else text
            self.path = _path or os.path.abspath(os.path.expanduser(local))
            return
        _remember_secrets(text, self.storage_options)
        self.path = _path if _path is not None else self._connect()[1]

    def _connect(self) -> tuple[Any, str]:
        import fsspec.core

        try:
            self._fs, path = fsspec.core.url_to_fs(self.original, **self.storage_options)
        except ImportError as exc:
            raise self.missing_dependency(exc) from None
        except (ValueError, TypeError, AttributeError) as exc:
            known = "protocol" not in str(exc).lower()
            raise DataSourceError(
                f"cannot open {self.display}: "
                + (f"the storage options do not suit the {self.protocol!r} filesystem "
                   f"({scrub_secrets(str(exc))})" if known else
                   f"fsspec knows no filesystem for the protocol {self.protocol!r}; check "
                   "the URL's scheme (s3://, gs://, az://, http(s)://, file://...)")) from None
        return self._fs, path

    def missing_dependency(self, exc: BaseException | None = None) -> MissingDependencyError:
        """The error for a filesystem library that is not installed."""
        package, extra = _EXTRAS.get(self.protocol, (None, None))
        if extra is not None:
            return MissingDependencyError(
                f"reading or writing {self.display} needs the {package} package, which is "
                f'not installed: pip install "daskgmm[{extra}]" (or pip install {package})')
        detail = f" ({scrub_secrets(str(exc))})" if exc is not None else ""
        return MissingDependencyError(
            f"reading or writing {self.display} needs a filesystem library for the "
            f"{self.protocol!r} protocol that is not installed{detail}")

    def __getstate__(self) -> tuple:
        return (self.original, self.storage_options, self.protocol, self.path)

    def __setstate__(self, state: tuple) -> None:
        self.original, self.storage_options, self.protocol, self.path = state
        self._fs = None

    def __repr__(self) -> str:
        return f"Location({self.display!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Location) and self.protocol == other.protocol
                and self.path == other.path)

    def __hash__(self) -> int:
        return hash((self.protocol, self.path))

    def __dask_tokenize__(self) -> tuple:
        # The options matter (another endpoint is other data) but never appear as text.
        import hashlib
        import json

        digest = hashlib.sha256(json.dumps(self.storage_options, sort_keys=True,
                                           default=repr).encode()).hexdigest()
        return ("Location", self.protocol, self.path, digest)

    # -- names ---------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        """Whether this is a path of the local filesystem."""
        return self.protocol == "file"

    @property
    def display(self) -> str:
        """The location as a user would recognise it, without credentials."""
        return redact_url(self.url)

    @property
    def url(self) -> str:
        """The path, or the full URL (may hold credentials: show :attr:`display`)."""
        return self.path if self.protocol in ("file", "sklearn") else self.original

    @property
    def name(self) -> str:
        """Last component of the path (``x.zarr`` for ``s3://b/d/x.zarr``)."""
        return self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]

    # -- the filesystem ------------------------------------------------------------------
    @property
    def fs(self) -> Any:
        """The fsspec filesystem, created once per process."""
        if self._fs is None:
            if self.is_local:
                from fsspec.implementations.local import LocalFileSystem

                self._fs = LocalFileSystem()
            else:
                self._connect()
        return self._fs

    @property
    def listable(self) -> bool:
        """Whether directories (prefixes) can be listed here (not over plain HTTP)."""
        return self.protocol not in _UNLISTABLE

    def join(self, *parts: str) -> Location:
        """The location of ``parts`` below this one."""
        parts = tuple(p.strip("/") for p in parts if p and p.strip("/"))
        if not parts:
            return self
        base, query = [*self.path.split("?", 1), ""][:2]
        path = "/".join([base.rstrip("/"), *parts]) + (f"?{query}" if query else "")
        original = self.original
        if "::" not in original:
            head, _, tail = original.partition("?")
            original = "/".join([head.rstrip("/"), *parts]) + (f"?{tail}" if tail else "")
        return Location(original, self.storage_options, _path=path, _fs=self._fs)

    @property
    def parent(self) -> Location:
        """The location of the directory (prefix) holding this one."""
        path = self.path.rstrip("/").rsplit("/", 1)[0] or "/"
        original = self.original.split("?", 1)[0].rstrip("/")
        if "::" not in original and original.count("/") > (2 if is_url(original) else 0):
            original = original.rsplit("/", 1)[0]
        return Location(original, self.storage_options, _path=path, _fs=self._fs)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.fs, method)(*args, **kwargs)
        except ImportError as exc:
            raise self.missing_dependency(exc) from None

    def exists(self) -> bool:
        """Whether anything is here (a dangling link, a non-empty prefix too);
        refused access and unreachable stores raise."""
        if self.protocol in ("file", "sklearn"):
            return self.protocol == "sklearn" or os.path.lexists(self.path)
        try:
            return bool(self._call("exists", self.path)) or (
                self.listable and bool(self._call("isdir", self.path)))
        except FileNotFoundError:
            return False

    def isdir(self) -> bool:
        """Whether this is a directory (a non-empty prefix on object stores)."""
        if not self.listable:
            return False
        try:
            return bool(self._call("isdir", self.path))
        except FileNotFoundError:
            return False

    def isfile(self) -> bool:
        """Whether this is a file (an object)."""
        try:
            return bool(self._call("isfile", self.path))
        except (FileNotFoundError, IsADirectoryError):
            return False

    def head(self, n: int) -> bytes:
        """The first ``n`` bytes of the file (``b""`` for a directory or nothing)."""
        try:
            return bytes(self._call("cat_file", self.path, start=0, end=n))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return b""

    def info(self) -> dict[str, Any]:
        """The filesystem's metadata of this path (size, mtime, ETag...)."""
        return dict(self._call("info", self.path))

    def open(self, mode: str = "rb", **kwargs: Any) -> Any:
        """Open the file (parent directories are created when writing)."""
        if "w" in mode or "a" in mode:
            self.parent.makedirs()
        return self._call("open", self.path, mode, **kwargs)

    def makedirs(self) -> None:
        """Create this directory (and its parents) where directories exist."""
        if self.listable:
            self._call("makedirs", self.path, exist_ok=True)

    def find(self) -> dict[str, dict[str, Any]]:
        """Every file below this directory: relative name -> its metadata (``size``
        and ``mtime``, ``ETag``... as the filesystem gives them); empty if none."""
        if self.protocol == "file":  # the same answer as fsspec's, 3x faster
            return _scan(self.path)
        try:
            found = self._call("find", self.path, withdirs=False, detail=True)
        except FileNotFoundError:
            return {}
        base = self.path.rstrip("/") + "/"
        out = {}
        for key, info in found.items():
            name = str(key)
            if not name.startswith(base):  # some filesystems add or strip a "/"
                idx = name.find(base.lstrip("/"))
                name = base + name[idx + len(base.lstrip("/")):] if idx >= 0 else ""
            if name.startswith(base):
                out[name[len(base):]] = info
        return out


def _scan(root: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    stack = [("", root)]
    while stack:
        prefix, directory = stack.pop()
        try:
            entries = os.scandir(directory)
        except OSError:
            continue
        with entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((prefix + entry.name + "/", entry.path))
                    else:
                        st = entry.stat(follow_symlinks=False)
                        out[prefix + entry.name] = {"size": st.st_size,
                                                    "mtime": st.st_mtime_ns}
    return out


class StoragePath(str):
    """A URL (or path) string that carries its ``storage_options``, for parameters
    that accept only a string (``checkpoint_dir``); its ``repr`` masks secrets."""

    storage_options: dict[str, Any]

    def __new__(cls, url: str | os.PathLike[str],
                storage_options: Mapping[str, Any] | None = None) -> StoragePath:
        self = super().__new__(cls, os.fspath(url))
        self.storage_options = dict(storage_options or {})
        return self

    def __reduce__(self) -> tuple:
        return (StoragePath, (str(self), self.storage_options))

    def __repr__(self) -> str:
        shown = redact_url(str(self))
        if not self.storage_options:
            return f"StoragePath({shown!r})"
        return f"StoragePath({shown!r}, storage_options={redact_options(self.storage_options)})"


def parse_location(path: str | os.PathLike[str] | Location,
                   storage_options: Mapping[str, Any] | None = None) -> Location:
    """The :class:`Location` of a path or URL (a ``Location`` is returned as it is,
    unless it has no options and ``storage_options`` are given; a :class:`StoragePath` brings
    its own). Raises MissingDependencyError, DataSourceError or TypeError."""
    if isinstance(path, Location):
        if storage_options and not path.storage_options:
            return Location(path.original, storage_options)
        return path
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"expected a path or URL string, got {type(path).__name__}")
    if storage_options is not None and not isinstance(storage_options, Mapping):
        raise TypeError(
            f"storage_options must be a dict, got {type(storage_options).__name__}")
    if storage_options is None and isinstance(path, StoragePath):
        storage_options = path.storage_options
    return Location(path, storage_options)


def relation(output: Location, other: Location) -> str | None:
    """How ``output`` and ``other`` overlap: ``"is"``, ``"contains"`` (``other`` inside
    ``output``), ``"lies inside"`` or None. Local paths are compared with symbolic links
    resolved, URLs by protocol family and path whatever the options (the safe side), and
    chained URLs (``simplecache::s3://...``) by their last link, the storage they name."""
    if "sklearn" in (output.protocol, other.protocol):  # data shipped with a library
        return None

    def key(loc: Location) -> tuple[str, str]:
        if loc.is_local:
            return "file", os.path.realpath(loc.path)
        target = loc.original.split("::")[-1]
        protocol = _protocol_of(target) if is_url(target) else "file"
        if protocol == "file":
            return "file", os.path.realpath(urlsplit(target).path or target)
        family = {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az",
                  "https": "http"}.get(protocol, protocol)
        return family, target.split("://", 1)[1].split("?", 1)[0].rstrip("/")

    (fam_a, a), (fam_b, b) = key(output), key(other)
    if fam_a != fam_b:
        return None
    if a == b:
        return "is"
    if b.startswith(a.rstrip("/") + "/"):
        return "contains"
    if a.startswith(b.rstrip("/") + "/"):
        return "lies inside"
    return None


_WRITE_ADVICE = {
    errno.ENOSPC: "no space left on the device: free some space or choose another location",
    errno.EDQUOT: "the disk quota is exceeded: free some space or choose another location",
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.ENAMETOOLONG: "a name is too long for the file system (at most 255 bytes per "
                        "name): choose a shorter name",
}


def describe_failure(exc: BaseException, loc: Location | None = None) -> str:
    """The reason a person can act on, for what a filesystem or object store raised."""
    text = scrub_secrets(" ".join(str(exc).split()))
    code = getattr(exc, "errno", None)
    if code in _WRITE_ADVICE:
        return _WRITE_ADVICE[code]
    if isinstance(exc, PermissionError) or code in (errno.EACCES, errno.EPERM):
        remote = loc is not None and not loc.is_local
        return ("access denied: check the credentials (storage options, environment) "
                "and the permissions" if remote else
                "permission denied: choose a location you may read or write")
    if isinstance(exc, TimeoutError):
        return "the storage did not answer in time; check the endpoint and the network"
    if isinstance(exc, ConnectionError) or "connect" in text.lower():
        return ("cannot connect to the storage endpoint; check that it is running and "
                "the endpoint_url in the storage options")
    if code == errno.EBUSY:
        return ("the store is throttling requests (still refused after retries); "
                "try again later or with fewer workers")
    if isinstance(exc, NotADirectoryError):
        return "a file is in the way where a directory is needed; choose another location"
    if isinstance(exc, FileNotFoundError):
        if "bucket" in text.lower():
            return "no such bucket; check the URL's bucket name and the endpoint"
        return "not found"
    if isinstance(exc, TypeError | AttributeError | ValueError):
        return (f"the storage options do not suit the filesystem ({text}); check their "
                "names and types")
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return f"the server answered HTTP {status} ({getattr(exc, 'message', '')})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_STORAGE_LIBRARIES = ("aiohttp", "aiobotocore", "botocore", "fsspec", "s3fs", "gcsfs",
                      "adlfs", "azure")


def _raised_in_a_storage_library(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by a filesystem library (innermost frame)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return module.split(".")[0] in _STORAGE_LIBRARIES


def _is_storage_failure(exc: BaseException) -> bool:
    if isinstance(exc, DaskGMMError):
        return False
    if isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in _STORAGE_LIBRARIES:
        return True
    # unknown or ill-typed storage options fail when the library first uses them
    return isinstance(exc, TypeError | AttributeError | ValueError) and \
        _raised_in_a_storage_library(exc)


@contextlib.contextmanager
def storage_errors(key: str, location: Any) -> Iterator[None]:
    """Turn a filesystem's or object store's failure inside the block into one
    :class:`~daskgmm.errors.StorageError` line naming ``key`` (``output.dir``, ``--model``...)
    and the location."""
    try:
        yield
    except Exception as exc:
        if not _is_storage_failure(exc):
            raise
        loc = location if isinstance(location, Location) else None
        shown = loc.display if loc is not None else redact_url(str(location))
        error = StorageError(f"{key} {shown}: {describe_failure(exc, loc)}")
        error.errno = getattr(exc, "errno", None)
        raise error from None
