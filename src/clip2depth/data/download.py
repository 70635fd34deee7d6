"""Resumable, verified HTTP downloads of the dataset archives in :mod:`clip2depth.data.sources`.

A file is fetched into ``<name>.part`` next to its final place. An interrupted download (dropped
connection, timeout, Ctrl-C, a full disk) keeps the ``.part`` file and continues from its end with an
HTTP ``Range`` request, on the next attempt or the next run; a host that ignores ``Range`` makes it
start again from zero, and so does a ``.part`` the host's file cannot continue (longer than the file,
or a web page). Only a file that is no web page and whose size and checksums check out is renamed to
its final name; one that fails is deleted (:func:`reject`).

Nothing is recorded here: :mod:`clip2depth.data.prepare` records a file's SHA-256 and marks it done
only after it also unpacked and held the files the split list names.
"""

from __future__ import annotations

import errno
import http.client
import logging
import math
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from html.parser import HTMLParser
from pathlib import Path

from clip2depth.data.sources import Source
from clip2depth.errors import ConfigError, DataError
from clip2depth.io.atomic import atomic_write_bytes, atomic_write_json, read_json_object
from clip2depth.io.digest import file_digest
from clip2depth.io.outputs import writable_folder
from clip2depth.io.progress import progress

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
DOWNLOADS_DIR = ".downloads"
CHECKSUMS_FILE = "checksums.json"
USER_AGENT = "clip2depth-downloader"
_HEAD_BYTES = 1024  # how much of a file is read to tell a web page from the archive it replaced

Opener = Callable[[urllib.request.Request, float], http.client.HTTPResponse]


class BadDownload(DataError):
    """A downloaded file that is not the file it should be (a web page, truncated, a checksum that
    differs, an archive that does not unpack or lacks the files the split list names): it is deleted
    and running the command again fetches it anew."""


def _open(request: urllib.request.Request, timeout: float) -> http.client.HTTPResponse:
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http/https URLs only)


def check_timeout(timeout: float) -> float:
    """``timeout`` when it is a positive, finite number of seconds; :class:`ConfigError` naming it otherwise."""
    number = isinstance(timeout, int | float) and not isinstance(timeout, bool)
    if not (number and math.isfinite(timeout) and timeout > 0):
        shown = f"{timeout:g}" if number else repr(timeout)
        raise ConfigError(f"timeout={shown}: the wait for data before a retry must be a positive number of "
                          "seconds, e.g. 60")
    return float(timeout)


def downloads_dir(root: str | Path) -> Path:
    """``<root>/.downloads``: archives, ``.part`` files, ``checksums.json`` and completion markers."""
    return Path(root) / DOWNLOADS_DIR


def done_marker(root: str | Path, name: str) -> Path:
    """``<root>/.downloads/<name>.done``: written once the file ``name`` passed every check and was unpacked."""
    return downloads_dir(root) / f"{name}.done"


def human_bytes(n: float) -> str:
    """``n`` bytes as ``12.3 GB`` (powers of 1000, as hosts and disks state sizes)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def check_disk_space(root: str | Path, needed: int) -> None:
    """Raise :class:`DataError` when the disk holding ``root`` has less than ``needed`` bytes free."""
    probe = Path(root)
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise DataError(
            f"not enough free disk space under {root}: {human_bytes(needed)} needed, {human_bytes(free)} "
            "free; free some space, choose another --root, or fetch less (--only test)"
        )


def write_error(exc: OSError, root: str | Path, doing: str, kept: str) -> DataError:
    """One message for a write under ``root`` that failed: what was being done to which file, why, what
    to do, and what was kept (``kept``) for the next run."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "the disk is full"
        fix = f"free some space on the disk holding {root} (or choose another root), then run the same command again"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = f"no permission ({exc.strerror})"
        fix = f"make {root} writable (or choose another root), then run the same command again"
    else:
        why = exc.strerror or str(exc)
        fix = "check the disk, then run the same command again"
    return DataError(f"{doing} failed: {why}{where}; {fix}: {kept}")


# --------------------------------------------------------------------------------------------------
# Recorded checksums (for files sources.py has none for).


def recorded_checksums(root: str | Path) -> dict[str, str]:
    """SHA-256 recorded for each file that passed every check in ``root`` before: ``{file name: hex}``.

    A damaged ``checksums.json`` counts as empty (with a warning): the next recorded file rewrites it.
    """
    data = read_json_object(downloads_dir(root) / CHECKSUMS_FILE) or {}
    return {str(k): str(v) for k, v in data.items()}


def confirmed_checksum(root: str | Path, name: str) -> str | None:
    """The recorded SHA-256 of ``name`` when its :func:`done_marker` confirms it (see :func:`record_done`),
    else None.

    A record the marker does not confirm was written before the file had passed its checks (clip2depth
    0.1.0 recorded right after the download, and marked ``unpacked`` whatever the archive held): it may be
    a web page's or a truncated file's, so it is not trusted.
    """
    recorded = recorded_checksums(root).get(name)
    try:
        marker = done_marker(root, name).read_text().split()
    except (OSError, UnicodeDecodeError):
        return None
    return recorded if recorded and marker == ["checked", recorded] else None


def record_done(root: str | Path, name: str, sha256: str | None) -> None:
    """Record that ``name`` passed every check and was unpacked: its ``sha256`` (None where sources.py
    has a checksum) in ``checksums.json`` as the reference for later downloads into ``root``, then the
    done marker ``checked <sha256>`` that confirms it."""
    if sha256 is not None:
        sums = recorded_checksums(root)
        sums[name] = sha256
        atomic_write_json(downloads_dir(root) / CHECKSUMS_FILE, dict(sorted(sums.items())))
    atomic_write_bytes(done_marker(root, name), f"checked {sha256 or '-'}\n".encode())


def forget_checksum(root: str | Path, name: str) -> None:
    """Drop the recorded SHA-256 of ``name`` unless its done marker confirms it."""
    sums = recorded_checksums(root)
    if name in sums and confirmed_checksum(root, name) is None:
        del sums[name]
        atomic_write_json(downloads_dir(root) / CHECKSUMS_FILE, dict(sorted(sums.items())))


def reject(source: Source, path: Path, root: str | Path, reason: str) -> DataError:
    """Delete ``path``, a download of ``source`` that failed a check for ``reason``, with any checksum
    recorded for it that no done marker backs; returns the error to raise (what was wrong, what next)."""
    path.unlink(missing_ok=True)
    forget_checksum(root, source.name)
    again = "run the same command again to download it anew"
    if source.alternatives:
        again += f"; if the host keeps serving such a file: {source.alternatives}"
    return DataError(f"{reason}; the file was deleted and nothing was recorded for it: {again}")


# --------------------------------------------------------------------------------------------------
# HTTP.


class _FormParser(HTMLParser):
    """The download form of Google Drive's "file too large to scan" page: action URL + hidden inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action")
            self._in_form = True
        elif tag == "input" and self._in_form and a.get("name"):
            self.fields[str(a["name"])] = a.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def gdrive_confirm_url(html: str, url: str) -> str | None:
    """The URL that confirms a Google Drive large-file download, read from its warning page, or None.

    Newer pages carry a form (``action`` + hidden ``id``/``confirm``/``uuid`` fields); older ones a link
    with a ``confirm=`` token.
    """
    parser = _FormParser()
    parser.feed(html)
    if parser.action and parser.fields:
        return urllib.parse.urljoin(url, parser.action) + "?" + urllib.parse.urlencode(parser.fields)
    match = re.search(r'href="([^"]*confirm=[^"]+)"', html)
    if match:
        return urllib.parse.urljoin(url, match.group(1).replace("&amp;", "&"))
    return None


class _Retry(Exception):
    """A transient failure (timeout, dropped connection): try again from the end of the .part file."""


def _request(url: str, start: int) -> urllib.request.Request:
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.Request(url, headers=headers)


def _total_size(response: http.client.HTTPResponse) -> int | None:
    if response.status == 206:
        match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range", ""))
        return int(match.group(1)) if match else None
    length = response.headers.get("Content-Length")
    return int(length) if length is not None and length.isdigit() else None


def _range_start(response: http.client.HTTPResponse) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _fail(source: Source, url: str, reason: str) -> DataError:
    return DataError(f"cannot download {source.name} from {url}: {reason}; alternatives: {source.alternatives}")


def is_web_page(path: Path) -> bool:
    """Whether ``path`` begins like an HTML page or an XML error document (what hosts send instead of a
    file they cannot serve), which neither a zip nor a MATLAB file does."""
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith(b"<") and any(tag in head for tag in (b"<html", b"<!doctype html", b"<error"))


def _restart(part: Path, why: str, source: Source) -> None:
    logger.warning("%s: %s; starting again from zero", source.name, why)
    part.unlink(missing_ok=True)


def _transfer(source: Source, url: str, part: Path, root: Path, *, timeout: float, show: bool, opener: Opener,
              follow_confirm: bool = True) -> int | None:
    """One HTTP attempt appending to ``part``; returns the file's total size when the host states it."""
    start = part.stat().st_size if part.exists() else 0
    if start and (is_web_page(part) or (source.size is not None and start > source.size)):
        _restart(part, f"the partial file {part} is not the beginning of {source.name}", source)
        start = 0
    try:
        response = opener(_request(url, start), timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:
            match = re.match(r"bytes \*/(\d+)", exc.headers.get("Content-Range", "") if exc.headers else "")
            if match and int(match.group(1)) == start:  # the .part file already holds every byte
                return start
            host_size = f"{human_bytes(int(match.group(1)))}" if match else "a size it does not state"
            _restart(part, f"the host's file has {host_size}, the partial file {part} {human_bytes(start)}: "
                           "it is not the host's file", source)
            return _transfer(source, url, part, root, timeout=timeout, show=show, opener=opener,
                             follow_confirm=follow_confirm)
        if exc.code in (408, 429, 500, 502, 503, 504):
            raise _Retry(f"HTTP {exc.code} {exc.reason}") from None
        raise _fail(source, url, f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Retry(str(getattr(exc, "reason", exc))) from None
    with response:
        content_type = response.headers.get_content_type()
        if content_type in ("text/html", "application/xhtml+xml"):
            google = "google" in urllib.parse.urlparse(url).netloc
            confirm = None
            if google and follow_confirm:
                html = response.read().decode("utf-8", "replace")
                confirm = gdrive_confirm_url(html, response.geturl())
            if confirm is not None:
                return _transfer(source, confirm, part, root, timeout=timeout, show=show, opener=opener,
                                 follow_confirm=False)
            what = "Google Drive answered with a page instead of the file (quota exceeded or link changed)" if google \
                else (f"the host answered with a web page (Content-Type {content_type}) instead of the file: an "
                      "error, login or quota page, or a wrong mirror path")
            raise _fail(source, url, what)
        if start and response.status != 206:
            logger.info("%s: the host ignores Range requests; starting again from zero", source.name)
            start = 0
        elif start and _range_start(response) != start:
            _restart(part, f"the host answered a request for the bytes from {start} with other bytes", source)
            raise _Retry("the host sent another range than the one asked for")
        total = _total_size(response)
        bar = progress(total=total, initial=start, enabled=show, desc=source.name, unit="B", unit_scale=True,
                       unit_divisor=1000)
        try:
            with open(part, "ab" if start else "wb") as f:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Retry(f"connection lost after {human_bytes(f.tell())} ({exc})") from None
                    if not chunk:
                        break
                    f.write(chunk)
                    bar.update(len(chunk))
        except OSError as exc:  # read errors became _Retry above: this is the disk
            got = part.stat().st_size if part.exists() else 0
            raise write_error(exc, root, f"writing {part}",
                              f"the {human_bytes(got)} received so far are kept and the download continues "
                              "where it stopped") from None
        finally:
            bar.close()
    got = part.stat().st_size
    if total is not None and got < total:
        raise _Retry(f"connection closed after {human_bytes(got)} of {human_bytes(total)}")
    return total


def verify(source: Source, path: Path, root: str | Path) -> None:
    """Check ``path`` against what is known of ``source``; :class:`BadDownload` when it is a web page, or
    its size, a checksum from ``sources.py`` or one recorded (and confirmed) in this root differs."""
    if is_web_page(path):
        raise BadDownload(f"{path} is a web page (HTML) or an error document (XML), not {source.name}: the host "
                          "served an error, login or quota page in its place")
    size = path.stat().st_size
    if source.size is not None and size != source.size:
        raise BadDownload(f"{path}: {size} bytes, {source.name} has {source.size}: the download is truncated or "
                          "another file")
    recorded = None if source.sha256 else confirmed_checksum(root, source.name)
    expected = {"sha256": source.sha256 or recorded, "md5": source.md5}
    for algorithm, want in expected.items():
        if want and file_digest(path, algorithm) != want.lower():
            if algorithm == "sha256" and recorded is not None:
                raise BadDownload(
                    f"{path}: {algorithm} checksum differs from the recorded {want} of the {source.name} unpacked "
                    f"into this root before: this download is damaged or the host's file changed (to accept the "
                    f"host's new file, delete the {source.name!r} entry of {downloads_dir(root) / CHECKSUMS_FILE})")
            raise BadDownload(f"{path}: {algorithm} checksum differs from the recorded {want}: the download is "
                              f"damaged or not {source.name}")


def fetch(
    source: Source,
    root: str | Path,
    *,
    mirror: str | None = None,
    timeout: float = 60.0,
    attempts: int = 5,
    show_progress: bool = True,
    opener: Opener = _open,
) -> Path:
    """Download ``source`` into ``<root>/.downloads/<name>`` (resuming a ``.part`` file) and verify it.

    A file already there (an earlier run's, or one put there by hand) is verified, not fetched again.
    Transient failures are retried ``attempts`` times, each continuing where the last stopped; a 404
    and exhausted retries raise :class:`DataError` naming the file and the alternatives. A file that
    fails :func:`verify` is deleted (:func:`reject`). Records nothing: see :mod:`clip2depth.data.prepare`.

    Returns:
        The path of the verified file.
    """
    check_timeout(timeout)
    url = source.url(mirror)
    root = Path(root)
    folder = writable_folder(downloads_dir(root), "downloads folder")
    final = folder / source.name
    part = folder / (source.name + ".part")
    if final.exists():
        try:
            verify(source, final, root)
        except BadDownload as exc:
            raise reject(source, final, root, str(exc)) from None
        logger.info("%s: already downloaded, verified", source.name)
        return final
    reason = ""
    for attempt in range(1, attempts + 1):
        try:
            total = _transfer(source, url, part, root, timeout=timeout, show=show_progress, opener=opener)
            break
        except _Retry as exc:
            reason = str(exc)
            logger.warning("%s: %s (attempt %d of %d)", source.name, reason, attempt, attempts)
    else:
        kept = part.stat().st_size if part.exists() else 0
        then = (f"the {human_bytes(kept)} received are kept in {part}: run the same command again to continue"
                if kept else "nothing was received: run the same command again later")
        raise _fail(source, url, f"{reason} ({attempts} attempts); {then}")
    try:
        got = part.stat().st_size
        if total is not None and got != total:
            raise BadDownload(f"{part}: {got} bytes received, the host announced {total}")
        verify(source, part, root)
    except BadDownload as exc:
        raise reject(source, part, root, str(exc)) from None
    part.replace(final)
    return final


def remote_size(source: Source, *, mirror: str | None = None, timeout: float = 30.0,
                opener: Opener = _open) -> int | None:
    """The size the host states for ``source`` (a HEAD request), or None when it states none or fails."""
    if source.size is not None:
        return source.size
    request = urllib.request.Request(source.url(mirror), method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        with opener(request, timeout) as response:
            if response.headers.get_content_type() == "text/html":
                return None
            length = response.headers.get("Content-Length")
            return int(length) if length is not None and length.isdigit() else None
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return None


def plan_sizes(sources: Sequence[Source], root: str | Path, *, mirror: str | None = None,
               online: bool = True, timeout: float = 30.0) -> list[tuple[Source, int, bool]]:
    """For each source still to fetch: ``(source, bytes, exact)``; ``exact`` False for an estimate.

    Files already downloaded count 0; a ``.part`` file counts what is left of it.
    """
    plan = []
    folder = downloads_dir(root)
    for source in sources:
        if (folder / source.name).exists():
            plan.append((source, 0, True))
            continue
        size = remote_size(source, mirror=mirror, timeout=timeout) if online else source.size
        exact = size is not None
        size = size if size is not None else source.approx_bytes
        part = folder / (source.name + ".part")
        if part.exists():
            size = max(size - part.stat().st_size, 0)
        plan.append((source, size, exact))
    return plan
