"""A real HTTP server on 127.0.0.1 for the download tests, with switches for the failures hosts show.

Usage::

    with FileServer({"path/file.zip": data}) as server:
        server.url  # "http://127.0.0.1:PORT/"
        server.no_range = True          # ignore Range headers (answer 200 with the whole file)
        server.drop_after["path/file.zip"] = 1000  # close the connection after 1000 bytes, once
        server.drop_always["path/file.zip"] = 1000  # ... on every request
        server.content_types["path/file.zip"] = "text/html"  # the Content-Type sent (default octet-stream)
        server.requests                 # [(path, Range header or None), ...]

Unknown paths answer 404; a Range starting at or past the end answers 416 with ``Content-Range: bytes */SIZE``.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.no_range = False
        self.drop_after: dict[str, int] = {}
        self.drop_always: dict[str, int] = {}
        self.content_types: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _headers(self) -> tuple[bytes, int, int] | None:
                path = self.path.lstrip("/")
                server.requests.append((path, self.headers.get("Range")))
                if path not in server.files:
                    self.send_error(404, "Not Found")
                    return None
                data = server.files[path]
                start = 0
                match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
                if match and not server.no_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return None
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", server.content_types.get(path, "application/octet-stream"))
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "none" if server.no_range else "bytes")
                self.end_headers()
                return data, start, len(data)

            def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
                self._headers()

            def do_GET(self) -> None:  # noqa: N802
                found = self._headers()
                if found is None:
                    return
                data, start, end = found
                path = self.path.lstrip("/")
                limit = server.drop_after.pop(path, server.drop_always.get(path))
                if limit is not None:
                    self.wfile.write(data[start:start + limit])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:end])

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
