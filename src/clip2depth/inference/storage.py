"""Object storage next to local files: a ``predict`` input, ``--out`` or ``--manifest`` may be an fsspec URL.

A *location* is a local :class:`~pathlib.Path`, or the URL of an object or prefix as a ``str``
(``s3://bucket/photos/``, ``gs://bucket/x.jpg``); :func:`location` turns command-line text into one, and a
``file://`` URL is just a local path. Filesystems come from fsspec (``s3fs`` for ``s3://``, ``gcsfs`` for
``gs://``, ``adlfs`` for ``az://``), which read credentials and endpoints from the standard environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL`` for an
S3-compatible server; ``GOOGLE_APPLICATION_CREDENTIALS``).

Remote inputs are fetched into a local temporary folder for reading (:func:`local_copy`); outputs are
written into one (:func:`staged_outputs`) and uploaded under their final names. An object store makes
an object visible only once its upload has completed (a single PUT, or the completion of a multipart
upload), so an output appears under its final key whole or not at all, as local files do through
:mod:`clip2depth.io.atomic`; on any other fsspec filesystem the upload goes to a hidden temporary name
first and is then moved onto the final one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeAlias, TypeVar

from clip2depth.errors import Clip2DepthError, ConfigError, DataError
from clip2depth.io.atomic import atomic_write_bytes, temporary_name
from clip2depth.io.inputs import is_image_path, is_video_path

logger = logging.getLogger(__name__)

Location: TypeAlias = Path | str
"""A local file or folder (:class:`~pathlib.Path`), or the URL of an object or prefix (``str``)."""

L = TypeVar("L", Path, str)

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
_MAGIC = re.compile(r"[*?[]")

OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"})
"""Protocols whose uploads become visible only when complete (a PUT is atomic)."""

_PACKAGES = {"s3": ("s3fs", "pip install 'clip2depth[storage]'"), "s3a": ("s3fs", "pip install 'clip2depth[storage]'"),
             "gs": ("gcsfs", "pip install gcsfs"), "gcs": ("gcsfs", "pip install gcsfs"),
             "az": ("adlfs", "pip install adlfs"), "abfs": ("adlfs", "pip install adlfs")}  # fmt: skip

_NETWORK_ERRORS = frozenset({"ConnectionError", "TimeoutError", "HTTPClientError", "ClientConnectionError"})
"""Names of the classes (Python's, botocore's, aiohttp's) of a failed connection, found in an exception's MRO;
the backends' packages are optional, so they are not imported to test against."""

_S3_CREDENTIALS = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and AWS_ENDPOINT_URL for an "
                   "S3-compatible server")
_GS_CREDENTIALS = "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or log in with gcloud"
_CREDENTIALS = {"s3": _S3_CREDENTIALS, "s3a": _S3_CREDENTIALS, "gs": _GS_CREDENTIALS, "gcs": _GS_CREDENTIALS}


def is_url(loc: object) -> bool:
    """Whether ``loc`` is a URL string (``s3://...``); local paths, ``Path`` objects and ``file://`` are not."""
    if not isinstance(loc, str):
        return False
    match = _URL.match(loc)
    return match is not None and match.group(1).lower() != "file"


def location(text: str | os.PathLike[str]) -> Location:
    """Command-line text as a location: a URL stays a ``str``; a path or ``file://`` URL becomes a ``Path``."""
    if isinstance(text, Path):
        return text
    text = os.fspath(text)
    if is_url(text):
        return text
    if text.lower().startswith("file://"):
        return Path(text[len("file://") :])
    return Path(text)


def protocol(url: str) -> str:
    """``"s3"`` for ``s3://bucket/key``."""
    match = _URL.match(url)
    if match is None:
        raise ValueError(f"not a URL: {url}")
    return match.group(1).lower()


def join(loc: L, name: str) -> L:
    """``loc / name`` for a folder or prefix."""
    if isinstance(loc, str):
        return loc.rstrip("/") + "/" + name
    return loc / name


def added(loc: L, suffix: str) -> L:
    """``loc`` with ``suffix`` appended to its name: ``out/img`` + ``_color.png`` → ``out/img_color.png``."""
    if isinstance(loc, str):
        return loc + suffix
    return loc.with_name(loc.name + suffix)


def name_of(loc: Location) -> str:
    """The last component of a path or URL."""
    return loc.rstrip("/").rsplit("/", 1)[-1] if isinstance(loc, str) else loc.name


def parent_of(loc: L) -> L:
    """The folder or prefix holding ``loc``."""
    if isinstance(loc, str):
        return loc.rstrip("/").rsplit("/", 1)[0]
    return loc.parent


def canonical(loc: Location) -> str:
    """A key for comparing locations: the resolved path of a local file, the URL without a trailing ``/``."""
    return loc.rstrip("/") if isinstance(loc, str) else str(loc.resolve())


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path within it (``s3://b/k`` → ``(S3FileSystem, "b/k")``).

    Raises:
        ConfigError: the protocol is unknown, or its package (``s3fs``, ``gcsfs``, ...) is not installed;
            the message names the package and how to install it.
    """
    import fsspec

    scheme = protocol(url)
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError:
        package, how = _PACKAGES.get(scheme, (f"the fsspec implementation of {scheme}://", "see fsspec's list"))
        raise ConfigError(f"{url}: {scheme}:// needs {package} ({how})") from None
    except ValueError as exc:
        raise ConfigError(f"{url}: {scheme}:// is not a storage protocol fsspec knows ({exc})") from None


def storage_error(url: str, exc: BaseException, doing: str, what: str = "") -> Clip2DepthError | None:
    """The error a user should see for ``exc`` raised while ``doing`` something with ``url``; None for a bug.

    Missing credentials and access denied are :class:`ConfigError` (what to set); a missing bucket or
    object is a :class:`DataError`, an endpoint that cannot be reached a :class:`ConfigError`. The message
    starts with ``what`` (e.g. ``"output folder"``) and the URL.
    """
    name = type(exc).__name__
    where = f"{what} {url}" if what else url
    credentials = _CREDENTIALS.get(protocol(url), "check the credentials in the environment")
    if name in ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError"):
        return ConfigError(f"{where}: no credentials to {doing} it; {credentials}")
    if isinstance(exc, PermissionError):
        return ConfigError(f"{where}: access denied while trying to {doing} it ({exc}); {credentials}")
    if isinstance(exc, FileNotFoundError):
        bucket = url.split("://", 1)[1].split("/", 1)[0]
        if "bucket" in str(exc).lower():
            return DataError(f"{where}: the bucket {bucket!r} does not exist; check the URL, or create the bucket")
        return DataError(f"{where}: no such object or prefix; check the URL")
    if any(cls.__name__ in _NETWORK_ERRORS for cls in type(exc).__mro__):
        return ConfigError(f"{where}: the connection to the storage endpoint failed while trying to {doing} it "
                           f"({exc}); check AWS_ENDPOINT_URL or the network")  # fmt: skip
    if isinstance(exc, OSError):
        return DataError(f"{where}: cannot {doing} it ({exc})")
    return None


@contextlib.contextmanager
def storage_errors(url: str, doing: str, what: str = "") -> Iterator[None]:
    """Turn what fsspec and its backends raise inside the block into :func:`storage_error`'s error."""
    try:
        yield
    except Clip2DepthError:
        raise
    except Exception as exc:
        error = storage_error(url, exc, doing, what)
        if error is None:
            raise
        raise error from exc


# ---------------------------------------------------------------------------------------------- finding inputs


@dataclass(frozen=True)
class FoundObject:
    """A remote input and its output name (the rule of :func:`clip2depth.io.inputs.find_files`).

    Attributes:
        path: the object's URL.
        name: output name without extension: its key below ``root`` with ``/`` written ``__``, the last
            extension dropped; for an object given by name, its stem.
        root: the prefix or glob root it was found under; None for an object given by name.
    """

    path: str
    name: str
    root: str | None = None


def _stem_below(key: str, root: str | None) -> str:
    parts = PurePosixPath(key).parts
    if root is not None:
        rel = PurePosixPath(key).relative_to(root.rstrip("/")) if key.startswith(root.rstrip("/") + "/") else None
        if rel is not None:
            parts = rel.parts
    else:
        parts = parts[-1:]
    return "__".join((*parts[:-1], PurePosixPath(parts[-1]).stem))


def _hidden_below(key: str, root: str) -> bool:
    rel = key[len(root.rstrip("/")) + 1 :]
    return any(part.startswith(".") for part in rel.split("/"))


def find_objects(inputs: Sequence[str]) -> tuple[list[FoundObject], list[tuple[str, str]]]:
    """Remote inputs (objects, prefixes searched recursively, glob patterns) and their output names.

    The rules of :func:`clip2depth.io.inputs.find_files`: an object is taken as given and named by its
    stem; a prefix (``s3://bucket/photos/``) is listed once, recursively, for image and video names,
    each named by its key below the prefix, hidden names (``.x``) left out; a pattern (``*``, ``?``,
    ``[``, ``**``) keeps the image and video objects it matches, named below its leading part without
    wildcards. Keys are sorted; an object reached twice is listed once.

    Returns:
        ``(objects, problems)``: ``problems`` holds ``(input, reason)`` for inputs that match nothing.

    Raises:
        ConfigError: missing credentials, access denied, an unreachable endpoint, a missing package.
    """
    found: list[FoundObject] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(fs: Any, key: str, root: str | None) -> None:
        url = fs.unstrip_protocol(key)
        if url not in seen:
            seen.add(url)
            found.append(FoundObject(url, _stem_below(key, root), None if root is None else fs.unstrip_protocol(root)))

    for raw in inputs:
        fs, path = filesystem(raw)
        with storage_errors(raw, "list"):
            fs.invalidate_cache()
            if _MAGIC.search(path):
                root = "/".join(p for p in _fixed_prefix(path))
                keys = sorted(k for k in fs.glob(path) if _is_media(k) and not _hidden_below(k, root))
                if not keys:
                    problems.append((raw, "pattern matches no image or video objects"))
                for key in keys:
                    add(fs, key, root)
                continue
            try:
                kind = fs.info(path).get("type")
            except FileNotFoundError as exc:
                error = storage_error(raw, exc, "list")
                problems.append((raw, str(error).split(": ", 1)[-1] if error else "no such object or prefix"))
                continue
            if kind == "directory":
                keys = sorted(k for k in fs.find(path) if _is_media(k) and not _hidden_below(k, path))
                if not keys:
                    problems.append((raw, "prefix holds no image or video objects"))
                for key in keys:
                    add(fs, key, path)
            else:
                add(fs, path, None)
    return found, problems


def _fixed_prefix(path: str) -> list[str]:
    parts = path.split("/")
    fixed = []
    for part in parts[:-1]:
        if _MAGIC.search(part):
            break
        fixed.append(part)
    return fixed


def _is_media(key: str) -> bool:
    return is_image_path(key) or is_video_path(key)


def list_existing(prefix: str, what: str = "output folder") -> set[str]:
    """Every object and pseudo-folder below ``prefix``, as URLs: one recursive listing (skip checks).

    A prefix in a bucket that exists but holds nothing gives an empty set.

    Raises:
        DataError: the bucket does not exist. ConfigError: credentials, access, endpoint, package.
    """
    fs, path = filesystem(prefix)
    with storage_errors(prefix, "list", what):
        fs.invalidate_cache()
        keys = fs.find(path, withdirs=True)
    return {fs.unstrip_protocol(k).rstrip("/") for k in keys}


# ---------------------------------------------------------------------------------------------- reading, writing


@contextlib.contextmanager
def local_copy(loc: Location) -> Iterator[Path]:
    """A local file holding ``loc``: the path itself, or a copy of a remote object (removed after the block).

    The copy keeps the object's name, so its suffix (image or video) and its EXIF come along.

    Raises:
        DataError: the object is missing or cannot be read. ConfigError: credentials, access, endpoint.
    """
    if isinstance(loc, Path):
        yield loc
        return
    scratch = Path(tempfile.mkdtemp(prefix="clip2depth-in-"))
    try:
        local = scratch / name_of(loc)
        fs, path = filesystem(loc)
        with storage_errors(loc, "read"):
            fs.get_file(path, str(local))
        yield local
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


Publish = Callable[[Sequence[Path]], list[Location]]


@contextlib.contextmanager
def staged_outputs(base: L) -> Iterator[tuple[Path, Publish]]:
    """A local output name to write under, and the function that puts what was written at ``base``.

    For a local ``base``: ``base`` itself and a publish that returns its arguments. For a URL: a name in a
    temporary folder, and a publish that uploads each file to the same name relative to ``base``'s prefix
    (:func:`upload`) and returns the URLs; the folder is removed after the block, uploaded or not.
    """
    if isinstance(base, Path):
        yield base, list
        return
    scratch = Path(tempfile.mkdtemp(prefix="clip2depth-out-"))
    prefix = parent_of(base)

    def publish(written: Sequence[Path]) -> list[Location]:
        urls: list[Location] = []
        for local in written:
            url = join(prefix, local.relative_to(scratch).as_posix())
            upload(local, url)
            urls.append(url)
        return urls

    try:
        yield scratch / name_of(base), publish
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def upload(local: Path, url: str) -> None:
    """Put the file ``local`` at ``url`` so that it appears there whole or not at all (see the module docstring).

    Raises:
        DataError / ConfigError: as :func:`storage_error` says (missing bucket, credentials, ...).
    """
    fs, path = filesystem(url)
    with storage_errors(url, "write"):
        if protocol(url) in OBJECT_STORES:
            fs.put_file(str(local), path)
        else:
            parent, _, name = path.rpartition("/")
            tmp = f"{parent}/{temporary_name(name)}"
            fs.put_file(str(local), tmp)
            try:
                fs.mv(tmp, path)
            except BaseException:
                with contextlib.suppress(Exception):
                    fs.rm(tmp)
                raise


def write_bytes(loc: Location, data: bytes) -> None:
    """Write ``data`` to a local file atomically or upload it to a URL (:func:`upload`)."""
    if isinstance(loc, Path):
        atomic_write_bytes(loc, data)
        return
    with staged_outputs(loc) as (local, publish):
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        publish([local])


def read_bytes(loc: Location) -> bytes | None:
    """The content of a local file or object; None when it does not exist."""
    if isinstance(loc, Path):
        try:
            return loc.read_bytes()
        except FileNotFoundError:
            return None
    fs, path = filesystem(loc)
    with storage_errors(loc, "read"):
        fs.invalidate_cache()
        try:
            return fs.cat_file(path)
        except FileNotFoundError as exc:
            if "bucket" in str(exc).lower():
                raise
            return None


def exists(loc: Location) -> bool:
    """Whether a local file or folder, or an object, exists (one request for a URL)."""
    if isinstance(loc, Path):
        return loc.exists()
    fs, path = filesystem(loc)
    with storage_errors(loc, "read"):
        fs.invalidate_cache()
        return bool(fs.exists(path))
