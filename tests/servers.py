"""Real servers on 127.0.0.1 for the tests of remote reading and writing.

* :func:`s3_server`: moto's standalone S3-compatible server (``python -m moto.server``)
  as a subprocess, with a bucket created; yields :class:`S3Server`.
* :func:`http_server`: a threaded HTTP file server over a temporary directory that
  honours single ``Range`` requests (what fsspec's HTTP filesystem needs for partial
  reads); yields :class:`HTTPServer`;
* :func:`flaky_s3`: an HTTP proxy before the moto server that fails the requests a
  test chooses (an upload cut in the middle, throttling, access refused);
* :func:`s3_with_credentials`: a second moto server that checks credentials.

Both are session fixtures registered in ``conftest.py``; no client library is mocked.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
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


# ---------------------------------------------------------------------------------------
# S3 that fails on purpose, and S3 that checks credentials
# ---------------------------------------------------------------------------------------


class _ProxyHandler(BaseHTTPRequestHandler):
    """Forward one request to the S3 server, unless the proxy's rule fails it."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _relay(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        proxy: FlakyS3 = self.server.proxy  # type: ignore[attr-defined]
        kind = ("copy" if self.command == "PUT" and "x-amz-copy-source" in self.headers
                else self.command.lower())
        failure = proxy.decide(kind, self.path)
        if failure is not None:
            status, code = failure
            payload = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                       f"<Message>refused by the test proxy</Message></Error>").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            return
        upstream = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        upstream.request(self.command, self.path, body=body or None, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay


@dataclass
class FlakyS3:
    """An HTTP proxy in front of the moto server (``endpoint``) whose :attr:`rule`
    may fail requests: ``rule(kind, path, counts) -> (status, code) or None``, where
    ``kind`` is ``'get'``, ``'put'``, ``'copy'``, ``'delete'``, ``'head'`` or
    ``'post'`` and ``counts`` how many of each kind came before (this one included)."""

    endpoint: str
    port: int
    bucket: str
    secret: str
    rule: object = None
    counts: dict = field(default_factory=dict)

    def decide(self, kind: str, path: str):
        with _LOCK:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            counts = dict(self.counts)
        return self.rule(kind, path, counts) if self.rule is not None else None

    def reset(self, rule=None) -> None:
        with _LOCK:
            self.rule, self.counts = rule, {}

    @property
    def storage_options(self) -> dict:
        return {"key": "daskgmm-test-key", "secret": self.secret,
                "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}}


_LOCK = threading.Lock()


@pytest.fixture(scope="session")
def flaky_s3(s3_server):
    """A proxy before the session's moto server that fails requests on demand."""
    port = int(s3_server.endpoint.rsplit(":", 1)[1])
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
    proxy = FlakyS3(f"http://127.0.0.1:{server.server_address[1]}", port,
                    s3_server.bucket, s3_server.secret)
    server.proxy = proxy  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def s3_with_credentials():
    """A second moto server that checks credentials (IAM on): a bucket and a key pair
    allowed everything; any other key is refused (403)."""
    pytest.importorskip("moto.server")
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"}
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
        import json

        import boto3

        anyone = {"endpoint_url": endpoint, "region_name": "us-east-1",
                  "aws_access_key_id": "x", "aws_secret_access_key": "x"}
        boto3.client("s3", **anyone).create_bucket(Bucket="daskgmm-auth")
        iam = boto3.client("iam", **anyone)
        iam.create_user(UserName="daskgmm")
        iam.put_user_policy(UserName="daskgmm", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="daskgmm")["AccessKey"]
        yield S3Server(endpoint, "daskgmm-auth", key["SecretAccessKey"]), \
            key["AccessKeyId"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
