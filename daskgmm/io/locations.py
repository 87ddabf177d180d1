"""Where data lives: local paths and fsspec URLs, with credentials kept out of sight.

:func:`parse_location` turns what a user passed (a path, a ``pathlib.Path`` or a URL
such as ``s3://bucket/x.zarr``, ``gs://``, ``az://``/``abfs://``, ``http(s)://``,
``memory://``, ``file://`` or any other fsspec protocol, chained ones included) plus
``storage_options`` into a :class:`Location`. Local paths (and ``file://`` URLs) stay
plain paths handled with :mod:`os`, exactly as before URLs were supported; everything
else goes through an fsspec filesystem created lazily, so a ``Location`` pickles into
a Dask graph as its description (protocol, path, options) and each worker process
makes its own filesystem.

Credentials never leave this module in readable form: :attr:`Location.display` is the
URL with any password and signed query parameters replaced by ``***``,
:func:`redact_options` masks secret-looking keys of ``storage_options``, and
:meth:`Location.scrub` removes every secret value from a text (e.g. an error message
from a filesystem library) before it is shown.

A missing filesystem library gives :class:`~daskgmm.errors.MissingDependencyError`
naming the extra to install (``pip install "daskgmm[s3]"``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from daskgmm.errors import DataSourceError, MissingDependencyError

__all__ = [
    "Location",
    "StoragePath",
    "is_url",
    "parse_location",
    "redact_options",
    "redact_url",
]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://|::")
_SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|credential|signature|sig$|^sig|sas|key$|_key|"
    r"^key|account_key|connection_string|auth|session|private)", re.IGNORECASE)
_MASK = "***"

# protocol -> (package, extra) for the messages of a missing filesystem library
_EXTRAS = {
    "s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"), "abfss": ("adlfs", "azure"),
    "adl": ("adlfs", "azure"),
    "http": ("aiohttp", "http"), "https": ("aiohttp", "http"),
}
# Protocols whose "directories" cannot be listed reliably (no listing API).
_UNLISTABLE = frozenset({"http", "https"})


def is_url(path: Any) -> bool:
    """Whether ``path`` is a URL (``scheme://...`` or a chained ``a::b://...``)."""
    return isinstance(path, str) and bool(_URL.search(path))


def _is_secret_key(key: Any) -> bool:
    return isinstance(key, str) and bool(_SECRET_KEY.search(key))


def redact_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``storage_options`` with every secret-looking value replaced by ``***``.

    Keys containing ``secret``, ``password``, ``token``, ``key``, ``credential``,
    ``sas``, ``signature``, ``auth``, ``session`` or ``connection_string`` are masked,
    in nested dictionaries too (``client_kwargs`` ...).
    """
    out: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if isinstance(value, Mapping):
            out[key] = redact_options(value)
        elif _is_secret_key(key) and value is not None:
            out[key] = _MASK
        else:
            out[key] = value
    return out


def redact_url(url: str) -> str:
    """``url`` with its password and secret query parameters replaced by ``***``."""
    if not isinstance(url, str) or "://" not in url:
        return url
    if "::" in url:
        return "::".join(redact_url(part) for part in url.split("::"))
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/@]*@", f"//{_MASK}@", url)
    netloc, query = parts.netloc, parts.query
    pairs = parse_qsl(query, keep_blank_values=True) if query else []
    if "@" not in netloc and not any(_is_secret_key(k) for k, _ in pairs):
        return url
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{_MASK}@{host}" if ":" in userinfo else f"{_MASK}@{host}"
    if pairs:
        query = "&".join(f"{k}={_MASK if _is_secret_key(k) else v}" for k, v in pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secrets_in_url(url: str) -> list[str]:
    found: list[str] = []
    for part in url.split("::"):
        try:
            parts = urlsplit(part)
        except ValueError:
            continue
        if parts.password:
            found.append(parts.password)
        if "@" in parts.netloc and ":" not in parts.netloc.rsplit("@", 1)[0]:
            found.append(parts.netloc.rsplit("@", 1)[0])
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if _is_secret_key(key) and value:
                found.append(value)
    return found


def _secrets_in_options(options: Mapping[str, Any] | None) -> Iterable[str]:
    for key, value in (options or {}).items():
        if isinstance(value, Mapping):
            yield from _secrets_in_options(value)
        elif _is_secret_key(key) and value is not None:
            yield str(value)


def _protocol_of(url: str) -> str:
    last = url.split("::")[0]
    return last.split("://", 1)[0].lower() if "://" in last else last.lower()


class Location:
    """A local path or a URL with its ``storage_options``; picklable, secret-free repr.

    Parameters
    ----------
    original : str
        What the user passed (a local path or a URL; may hold credentials).
    storage_options : dict, optional
        Options of the fsspec filesystem (ignored for local paths).

    Attributes
    ----------
    is_local : bool
        Whether the data is on the local file system (plain path or ``file://``).
    path : str
        The absolute local path, or the path inside the filesystem (``bucket/key``).
    protocol : str
        ``"file"`` for local paths, else the URL's (first) protocol.
    """

    __slots__ = ("_fs", "is_local", "original", "path", "protocol", "storage_options")

    def __init__(self, original: str, storage_options: Mapping[str, Any] | None = None,
                 *, _path: str | None = None) -> None:
        self.original = original
        self.storage_options = dict(storage_options or {})
        self._fs: Any = None
        if not is_url(original):
            self.is_local, self.protocol = True, "file"
            self.path = _path or os.path.abspath(os.path.expanduser(original))
            return
        self.protocol = _protocol_of(original)
        if self.protocol in ("file", "local") and "::" not in original:
            self.is_local = True
            self.path = _path or os.path.abspath(urlsplit(original).path or "/")
            return
        self.is_local = False
        if _path is not None:
            self.path = _path
        else:
            fs, path = self._url_to_fs()
            self._fs = fs
            self.path = path

    # -- construction helpers ----------------------------------------------------------
    def _url_to_fs(self) -> tuple[Any, str]:
        import fsspec.core

        try:
            return fsspec.core.url_to_fs(self.original, **self.storage_options)
        except ImportError as exc:
            raise self.missing_dependency(exc) from None
        except ValueError as exc:
            if "protocol" in str(exc).lower():
                raise DataSourceError(
                    f"Cannot open {self.display}: fsspec knows no filesystem for the "
                    f"protocol {self.protocol!r}. Check the URL's scheme (s3://, gs://, az://, "
                    "http(s)://, memory://, file:// ...)."
                ) from None
            raise DataSourceError(
                f"Cannot open {self.display}: {self.scrub(str(exc))}") from None
        except TypeError as exc:
            raise DataSourceError(
                f"Cannot open {self.display}: the storage_options do not suit the "
                f"{self.protocol!r} filesystem ({self.scrub(str(exc))}); storage_options "
                f"given: {redact_options(self.storage_options)}."
            ) from None

    def missing_dependency(self, exc: BaseException | None = None) -> MissingDependencyError:
        """The error for a filesystem library that is not installed."""
        package, extra = _EXTRAS.get(self.protocol, (None, None))
        if extra is not None:
            return MissingDependencyError(
                f"Reading or writing {self.display} needs the {package} package, which is "
                f'not installed: pip install "daskgmm[{extra}]" (or pip install {package}).'
            )
        detail = f" ({self.scrub(str(exc))})" if exc is not None else ""
        return MissingDependencyError(
            f"Reading or writing {self.display} needs a filesystem library for the "
            f"{self.protocol!r} protocol that is not installed{detail}."
        )

    def __getstate__(self) -> tuple:
        return (self.original, self.storage_options, self.is_local, self.protocol, self.path)

    def __setstate__(self, state: tuple) -> None:
        (self.original, self.storage_options, self.is_local, self.protocol,
         self.path) = state
        self._fs = None

    def __repr__(self) -> str:
        return f"Location({self.display!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Location) and self.is_local == other.is_local
                and self.protocol == other.protocol and self.path == other.path)

    def __hash__(self) -> int:
        return hash((self.protocol, self.path))

    def __dask_tokenize__(self) -> tuple:
        # The options matter (another endpoint is other data) but never appear as text.
        import hashlib
        import json

        digest = hashlib.sha256(json.dumps(self.storage_options, sort_keys=True,
                                           default=repr).encode()).hexdigest()
        return ("Location", self.protocol, self.path, digest)

    # -- what to show -----------------------------------------------------------------
    @property
    def display(self) -> str:
        """The location as a user would recognise it, without credentials."""
        if self.is_local:
            return self.path
        return redact_url(self.url)

    @property
    def url(self) -> str:
        """The full URL (may hold credentials: never print it; use :attr:`display`)."""
        if self.is_local:
            return self.path
        if "::" in self.original:
            return self.original
        try:
            return self.fs.unstrip_protocol(self.path)
        except Exception:
            return self.original

    def scrub(self, text: str) -> str:
        """``text`` with every credential of this location replaced by ``***``."""
        secrets = [*_secrets_in_url(self.original), *_secrets_in_options(self.storage_options)]
        for secret in sorted(set(secrets), key=len, reverse=True):
            if len(secret) >= 3:
                text = text.replace(secret, _MASK)
        return redact_url(text) if "://" in text and "@" in text else text

    @property
    def name(self) -> str:
        """Last component of the path (``x.zarr`` for ``s3://b/d/x.zarr``)."""
        return self.path.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]

    # -- filesystem access -------------------------------------------------------------
    @property
    def fs(self) -> Any:
        """The fsspec filesystem (the local one for local paths), created once."""
        if self._fs is None:
            if self.is_local:
                from fsspec.implementations.local import LocalFileSystem

                self._fs = LocalFileSystem()
            else:
                self._fs, _ = self._url_to_fs()
        return self._fs

    @property
    def listable(self) -> bool:
        """Whether directories (prefixes) can be listed here (not over plain HTTP)."""
        return self.is_local or self.protocol not in _UNLISTABLE

    def join(self, *parts: str) -> Location:
        """The location of ``parts`` below this one."""
        parts = tuple(p.strip("/") for p in parts if p and p.strip("/"))
        if not parts:
            return self
        if self.is_local:
            path = os.path.join(self.path, *parts)
            return Location(path, _path=path)
        path = "/".join([self.path.rstrip("/"), *parts])
        original = self.original
        if "::" not in original:
            original = "/".join([original.split("?", 1)[0].rstrip("/"), *parts])
            query = self.original.split("?", 1)[1] if "?" in self.original else ""
            original = f"{original}?{query}" if query else original
        loc = Location(original, self.storage_options, _path=path)
        loc.protocol = self.protocol
        loc._fs = self._fs
        return loc

    @property
    def parent(self) -> Location:
        """The location of the directory (prefix) holding this one."""
        if self.is_local:
            parent = os.path.dirname(self.path.rstrip(os.sep)) or os.sep
            return Location(parent, _path=parent)
        path = self.path.rstrip("/").rsplit("/", 1)[0] if "/" in self.path.rstrip("/") else ""
        original = self.original
        if "::" not in original:
            base = original.split("?", 1)[0].rstrip("/")
            original = base.rsplit("/", 1)[0] if base.count("/") > 2 else base
        loc = Location(original, self.storage_options, _path=path)
        loc.protocol = self.protocol
        loc._fs = self._fs
        return loc

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.fs, method)(*args, **kwargs)
        except ImportError as exc:
            raise self.missing_dependency(exc) from None

    def exists(self) -> bool:
        """Whether anything (file, directory, prefix) is at this location."""
        if self.is_local:
            return os.path.lexists(self.path)
        try:
            return bool(self._call("exists", self.path))
        except (FileNotFoundError, PermissionError):
            return False

    def isdir(self) -> bool:
        """Whether this is a directory (a non-empty prefix on object stores)."""
        if self.is_local:
            return os.path.isdir(self.path)
        if not self.listable:
            return False
        try:
            return bool(self._call("isdir", self.path))
        except (FileNotFoundError, PermissionError):
            return False

    def isfile(self) -> bool:
        """Whether this is a file (an object)."""
        if self.is_local:
            return os.path.isfile(self.path)
        try:
            return bool(self._call("isfile", self.path))
        except (FileNotFoundError, PermissionError, IsADirectoryError):
            return False

    def head(self, n: int) -> bytes:
        """The first ``n`` bytes of the file, or ``b""`` if it cannot be read."""
        if self.is_local:
            try:
                with open(self.path, "rb") as f:
                    return f.read(n)
            except OSError:
                return b""
        try:
            return bytes(self._call("cat_file", self.path, start=0, end=n))
        except MissingDependencyError:
            raise
        except Exception:
            return b""

    def info(self) -> dict[str, Any]:
        """Metadata of the file (size, modification time or ETag when the store has them)."""
        if self.is_local:
            st = os.stat(self.path)
            return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "type": "file"}
        return dict(self._call("info", self.path))

    def open(self, mode: str = "rb", **kwargs: Any) -> Any:
        """Open the file (a plain file object locally, an fsspec file otherwise)."""
        if self.is_local:
            return open(self.path, mode)
        return self._call("open", self.path, mode, **kwargs)


class StoragePath(str):
    """A URL (or path) string that carries its ``storage_options``.

    It is a ``str`` (it prints, compares and validates as the plain URL), so it can be
    given where only a string is accepted -- an estimator parameter such as
    ``checkpoint_dir`` -- and still reach the filesystem with its options:
    :func:`parse_location` uses them when no other ``storage_options`` are given. Its
    ``repr`` masks secrets; it pickles and copies with its options.

    Examples
    --------
    >>> p = StoragePath("s3://bucket/ckpt", {"key": "K", "secret": "S"})
    >>> p == "s3://bucket/ckpt", p.storage_options["key"]
    (True, 'K')
    >>> p
    StoragePath('s3://bucket/ckpt', storage_options={'key': '***', 'secret': '***'})
    """

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


def relation(output: Location, other: Location) -> str | None:
    """How ``output`` and ``other`` overlap: ``"is"`` (the same place), ``"contains"``
    (``other`` is inside ``output``), ``"lies inside"`` (``output`` is inside ``other``)
    or None (disjoint, or on different file systems).

    Local paths are compared after resolving symbolic links; URLs by protocol and path
    (``s3://b/x`` contains ``s3://b/x/y.zarr``; the options, e.g. the endpoint, are not
    compared, so two buckets of the same name on different servers count as one: the
    safe side).
    """
    if output.is_local != other.is_local:
        return None
    if output.is_local:
        a = os.path.realpath(output.path)
        b = os.path.realpath(other.path)
        sep = os.sep
    else:
        if _family(output.protocol) != _family(other.protocol):
            return None
        a, b, sep = output.path.rstrip("/"), other.path.rstrip("/"), "/"
    if a == b:
        return "is"
    if b.startswith(a.rstrip(sep) + sep):
        return "contains"
    if a.startswith(b.rstrip(sep) + sep):
        return "lies inside"
    return None


def _family(protocol: str) -> str:
    """Protocols that name the same storage (s3/s3a, gs/gcs, az/abfs/abfss)."""
    return {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az",
            "https": "http"}.get(protocol, protocol)


def parse_location(path: str | os.PathLike[str] | Location,
                   storage_options: Mapping[str, Any] | None = None) -> Location:
    """The :class:`Location` of a path or URL.

    Parameters
    ----------
    path : str, os.PathLike or Location
        A local path, or a URL of any fsspec protocol.
    storage_options : dict, optional
        Options of the filesystem (credentials, endpoint, ...); ignored for local paths.
        When None and ``path`` is a :class:`StoragePath`, its options are used.

    Raises
    ------
    MissingDependencyError
        The filesystem library of the URL's protocol is not installed.
    DataSourceError
        The protocol is unknown or the options do not suit it.
    TypeError
        ``path`` is neither a string nor path-like.
    """
    if isinstance(path, Location):
        if storage_options and not path.storage_options:
            return Location(path.original, storage_options)
        return path
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"expected a path or URL string, got {type(path).__name__}")
    if storage_options is not None and not isinstance(storage_options, Mapping):
        raise TypeError(
            f"storage_options must be a dict, got {type(storage_options).__name__}")
    if storage_options is None and isinstance(path, StoragePath):
        storage_options = path.storage_options
    return Location(str(os.fspath(path)), storage_options)
