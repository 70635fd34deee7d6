"""Resumable, verified HTTP downloads of the dataset archives in :mod:`clip2depth.data.sources`.

A file is fetched into ``<name>.part`` next to its final place. An interrupted download (dropped
connection, timeout, Ctrl-C) keeps the ``.part`` file and continues from its end with an HTTP
``Range`` request, on the next attempt or the next run; a server that ignores ``Range`` makes it start
again from zero. Only a file whose size and checksum check out is renamed to its final name.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from html.parser import HTMLParser
from pathlib import Path

from clip2depth.data.sources import Source
from clip2depth.errors import DataError
from clip2depth.io.atomic import atomic_write_json
from clip2depth.io.digest import file_digest
from clip2depth.io.progress import progress

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
DOWNLOADS_DIR = ".downloads"
CHECKSUMS_FILE = "checksums.json"
USER_AGENT = "clip2depth-downloader"

Opener = Callable[[urllib.request.Request, float], http.client.HTTPResponse]


def _open(request: urllib.request.Request, timeout: float) -> http.client.HTTPResponse:
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http/https URLs only)


def downloads_dir(root: str | Path) -> Path:
    """``<root>/.downloads``: archives, ``.part`` files, ``checksums.json`` and completion markers."""
    return Path(root) / DOWNLOADS_DIR


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


# --------------------------------------------------------------------------------------------------
# Recorded checksums (for files sources.py has none for).


def recorded_checksums(root: str | Path) -> dict[str, str]:
    """SHA-256 of each file downloaded completely into ``root`` before: ``{file name: hex}``."""
    path = downloads_dir(root) / CHECKSUMS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); delete it to record the checksums again") from None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def record_checksum(root: str | Path, name: str, sha256: str) -> None:
    sums = recorded_checksums(root)
    sums[name] = sha256
    atomic_write_json(downloads_dir(root) / CHECKSUMS_FILE, dict(sorted(sums.items())))


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


def _total_size(response: http.client.HTTPResponse, start: int) -> int | None:
    if response.status == 206:
        match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range", ""))
        return int(match.group(1)) if match else None
    length = response.headers.get("Content-Length")
    return int(length) if length is not None else None


def _fail(source: Source, url: str, reason: str) -> DataError:
    return DataError(f"cannot download {source.name} from {url}: {reason}; alternatives: {source.alternatives}")


def _transfer(source: Source, url: str, part: Path, *, timeout: float, show: bool, opener: Opener) -> int | None:
    """One HTTP attempt appending to ``part``; returns the file's total size when the host states it."""
    start = part.stat().st_size if part.exists() else 0
    try:
        response = opener(_request(url, start), timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the .part file already holds every byte
            return start
        if exc.code in (408, 429, 500, 502, 503, 504):
            raise _Retry(f"HTTP {exc.code} {exc.reason}") from None
        raise _fail(source, url, f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        raise _Retry(str(getattr(exc, "reason", exc))) from None
    with response:
        if response.headers.get_content_type() == "text/html" and "google" in urllib.parse.urlparse(url).netloc:
            html = response.read().decode("utf-8", "replace")
            confirm = gdrive_confirm_url(html, response.geturl())
            if confirm is None:
                raise _fail(source, url, "Google Drive answered with a page instead of the file (quota "
                                         "exceeded or link changed)")
            return _transfer(source, confirm, part, timeout=timeout, show=show, opener=opener)
        if start and response.status != 206:
            logger.info("%s: the host ignores Range requests; starting again from zero", source.name)
            start = 0
        total = _total_size(response, start)
        bar = progress(total=total, initial=start, enabled=show, desc=source.name, unit="B", unit_scale=True,
                       unit_divisor=1000)
        try:
            with open(part, "ab" if start else "wb") as f:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                        raise _Retry(f"connection lost after {human_bytes(f.tell())} ({exc})") from None
                    if not chunk:
                        break
                    f.write(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()
    got = part.stat().st_size
    if total is not None and got < total:
        raise _Retry(f"connection closed after {human_bytes(got)} of {human_bytes(total)}")
    return total


def verify(source: Source, path: Path, root: str | Path) -> None:
    """Check ``path`` against the size and checksums known for ``source``; DataError on a mismatch."""
    size = path.stat().st_size
    if source.size is not None and size != source.size:
        raise DataError(f"{path}: {size} bytes, expected {source.size}; the file is incomplete or not "
                        f"{source.name}")
    expected = {"sha256": source.sha256 or recorded_checksums(root).get(source.name), "md5": source.md5}
    for algorithm, want in expected.items():
        if want and file_digest(path, algorithm) != want.lower():
            raise DataError(f"{path}: {algorithm} checksum differs from the recorded {want}; the file is "
                            "corrupt or was changed on the host")


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

    A verified file already there is not fetched again. Transient failures are retried ``attempts``
    times, each continuing where the last stopped. A size or checksum mismatch deletes the download
    (it cannot be resumed into a correct file) and raises :class:`DataError`; so do a 404 and
    exhausted retries, naming the file and the alternatives. Where ``sources.py`` has no SHA-256, the
    file's is recorded in ``checksums.json`` after this first complete download.

    Returns:
        The path of the verified file.
    """
    folder = downloads_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / source.name
    part = folder / (source.name + ".part")
    url = source.url(mirror)
    if final.exists():  # an earlier run's download, or a file the user put there by hand
        verify(source, final, root)
        _record_if_new(source, final, root)
        logger.info("%s: already downloaded, verified", source.name)
        return final
    reason = ""
    for attempt in range(1, attempts + 1):
        try:
            total = _transfer(source, url, part, timeout=timeout, show=show_progress, opener=opener)
            break
        except _Retry as exc:
            reason = str(exc)
            logger.warning("%s: %s (attempt %d of %d)", source.name, reason, attempt, attempts)
    else:
        raise _fail(source, url, f"{reason}; the partial file {part} is kept, re-run to continue")
    if total is not None and part.stat().st_size != total:
        got = part.stat().st_size
        part.unlink()
        raise _fail(source, url, f"received {got} bytes, the host announced {total}")
    try:
        verify(source, part, root)
    except DataError:
        part.unlink()
        raise
    _record_if_new(source, part, root)
    part.replace(final)
    return final


def _record_if_new(source: Source, path: Path, root: str | Path) -> None:
    """Store the SHA-256 of a complete file sources.py has none for (the first download defines it)."""
    if source.sha256 or source.name in recorded_checksums(root):
        return
    digest = file_digest(path, "sha256")
    record_checksum(root, source.name, digest)
    logger.info("%s: sha256 %s (%d bytes) recorded in %s", source.name, digest, path.stat().st_size,
                downloads_dir(root) / CHECKSUMS_FILE)


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
            return int(length) if length is not None else None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, ValueError):
        return None


def plan_sizes(sources: Sequence[Source], root: str | Path, *, mirror: str | None = None,
               online: bool = True) -> list[tuple[Source, int, bool]]:
    """For each source still to fetch: ``(source, bytes, exact)``; ``exact`` False for an estimate.

    Files already downloaded count 0; a ``.part`` file counts what is left of it.
    """
    plan = []
    folder = downloads_dir(root)
    for source in sources:
        if (folder / source.name).exists():
            plan.append((source, 0, True))
            continue
        size = remote_size(source, mirror=mirror) if online else source.size
        exact = size is not None
        size = size if size is not None else source.approx_bytes
        part = folder / (source.name + ".part")
        if part.exists():
            size = max(size - part.stat().st_size, 0)
        plan.append((source, size, exact))
    return plan
