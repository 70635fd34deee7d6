"""A real S3-compatible server on 127.0.0.1 (moto's server mode) for the object-storage tests, and a proxy that
cuts uploads short.

Usage::

    with S3Server() as s3:
        s3.env                      # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... for s3fs / botocore
        s3.client().create_bucket(Bucket="photos")
        s3.keys("photos", "in/")    # sorted keys below a prefix

    with CuttingProxy(s3.port, cut=lambda method, path: method == "PUT" and path.endswith(".npy")) as proxy:
        proxy.url                   # an endpoint that forwards to the server, but sends only half the body of
                                    # each request ``cut`` selects and then drops the connection
        proxy.requests              # [(method, path with query), ...] of every request, in order
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def credentials_env(endpoint: str) -> dict[str, str]:
    """Test credentials for ``endpoint``; the user's own AWS files and instance metadata are not read."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_CONFIG_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip


class S3Server:
    """``moto_server`` in a subprocess on a free port, stopped on exit."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = credentials_env(self.url)
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> S3Server:
        self._process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self._process.poll() is not None:
                    raise RuntimeError("moto_server exited at start") from None
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("moto_server did not start within 60 s")

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")  # fmt: skip

    def upload_folder(self, folder: Path, bucket: str, prefix: str) -> None:
        client = self.client()
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                client.upload_file(str(path), bucket, f"{prefix}{path.relative_to(folder).as_posix()}")

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def get(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()


class CuttingProxy:
    """A TCP proxy in front of the server: one request per connection (``Connection: close``); a request that
    ``cut(method, path)`` selects gets only half its body forwarded before both connections are dropped, as
    when a worker dies or the network fails in the middle of an upload."""

    def __init__(self, port: int, cut: Callable[[str, str], bool]) -> None:
        self.target = port
        self.cut = cut
        self.cuts: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = False

    def __enter__(self) -> CuttingProxy:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = client.recv(65536)
            if not data:
                client.close()
                return
            head += data
        head, body = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, path = lines[0].split(" ")[:2]
        self.requests.append((method, path))
        headers = [line for line in lines[1:] if not line.lower().startswith("connection:")]
        length = next((int(line.split(":", 1)[1]) for line in headers if line.lower().startswith("content-length:")), 0)
        upstream = socket.create_connection(("127.0.0.1", self.target))
        upstream.sendall(("\r\n".join([lines[0], *headers, "Connection: close"]) + "\r\n\r\n").encode("latin-1"))
        budget = length // 2 if self.cut(method, path) else None
        if budget is not None:
            self.cuts.append(path)
        threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()
        self._pipe(client, upstream, budget, first=body)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, budget: int | None, first: bytes = b"") -> None:
        """Copy ``source`` to ``sink`` (at most ``budget`` bytes, then drop both connections)."""
        sent = 0
        data = first
        try:
            while True:
                if budget is not None and sent + len(data) >= budget:
                    sink.sendall(data[: budget - sent])
                    break
                if data:
                    sink.sendall(data)
                    sent += len(data)
                data = source.recv(65536)
                if not data:
                    break
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
