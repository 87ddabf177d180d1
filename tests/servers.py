"""Real servers on 127.0.0.1 for the tests of remote reading and writing.

* :func:`s3_server`: moto's standalone S3-compatible server (``python -m moto.server``)
  as a subprocess, with a bucket created; yields :class:`S3Server`.
* :func:`http_server`: a threaded HTTP file server over a temporary directory that
  honours single ``Range`` requests (what fsspec's HTTP filesystem needs for partial
  reads); yields :class:`HTTPServer`.

Both are session fixtures registered in ``conftest.py``; no client library is mocked.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    secret: str

    @property
    def storage_options(self) -> dict:
        return {"key": "daskgmm-test-key", "secret": self.secret,
                "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}}

    def url(self, name: str = "") -> str:
        """A fresh prefix in the bucket (unique per call unless ``name`` is given)."""
        return f"s3://{self.bucket}/{name or uuid.uuid4().hex}"

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 (subprocess) with one bucket."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "daskgmm-test-key",
           "AWS_SECRET_ACCESS_KEY": "unused", "AWS_DEFAULT_REGION": "us-east-1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", port), timeout=0.5):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the moto S3 server did not start")
            time.sleep(0.1)
        server = S3Server(endpoint, "daskgmm-tests", "s3cr3t-" + uuid.uuid4().hex[:12])
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="daskgmm-test-key",
                     aws_secret_access_key=server.secret).create_bucket(Bucket=server.bucket)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _RangeHandler(SimpleHTTPRequestHandler):
    """Static files with single-range ``Range: bytes=a-b`` support; quiet."""

    def log_message(self, format, *args):
        pass

    def send_head(self):
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        path = self.translate_path(self.path)
        if match is None or os.path.isdir(path):
            return super().send_head()
        try:
            f = open(path, "rb")
        except OSError:
            self.send_error(404, "File not found")
            return None
        size = os.fstat(f.fileno()).st_size
        start_s, end_s = match.groups()
        if start_s:
            start, end = int(start_s), min(int(end_s) if end_s else size - 1, size - 1)
        else:
            start, end = max(0, size - int(end_s)), size - 1
        if start >= size:
            f.close()
            self.send_error(416, "Requested Range Not Satisfiable")
            return None
        self.send_response(206)
        self.send_header("Content-type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        f.seek(start)
        self._remaining = end - start + 1
        return f

    def copyfile(self, source, outputfile):
        remaining = getattr(self, "_remaining", None)
        if remaining is None:
            return super().copyfile(source, outputfile)
        while remaining > 0:
            buf = source.read(min(remaining, 1 << 16))
            if not buf:
                break
            outputfile.write(buf)
            remaining -= len(buf)
        self._remaining = None


@dataclass
class HTTPServer:
    root: Path
    base: str

    def url(self, relative: str) -> str:
        return f"{self.base}/{relative.lstrip('/')}"


@pytest.fixture(scope="session")
def http_server(tmp_path_factory):
    """A file server over a temporary directory on 127.0.0.1 (Range requests work)."""
    root = tmp_path_factory.mktemp("http-root")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_RangeHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HTTPServer(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
