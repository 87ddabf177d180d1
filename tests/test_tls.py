"""Fitting on a cluster that only speaks TLS, and refusing clients without the right keys.

A throw-away certificate authority and one certificate for ``127.0.0.1``/``localhost``
(serving as both the server and the client identity) are made in the test's temporary
directory, with :mod:`cryptography` when it is installed and the ``openssl`` command
otherwise. A ``dask scheduler`` and two ``dask worker`` processes run with
``--tls-ca-file/--tls-cert/--tls-key`` and ``DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION``
(see :mod:`tests.clusterproc`), so every connection, worker to worker included, is
mutually authenticated TLS.

* A client holding a certificate of the CA connects and a ``GaussianMixture`` fit of a
  chunked Dask array gives the local fit's answer.
* Clients without the right keys are refused quickly: no security at all, a second
  self-signed CA (the client then also distrusts the server), a certificate of another
  CA, no client certificate (the server requires one), and plain TCP.
* A worker with a certificate of another CA never joins the cluster.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from daskgmm import GaussianMixture

from .clusterproc import ProcessCluster, TLSFiles
from .conftest import make_blobs

distributed = pytest.importorskip("distributed")
from distributed.security import Security  # noqa: E402

pytestmark = pytest.mark.slow

ENV = {"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}
REFUSAL_TIMEOUT = 5.0


# --------------------------------------------------------------------------------------
# certificates
# --------------------------------------------------------------------------------------
def _make_pki_cryptography(directory: Path, name: str) -> TLSFiles:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def pem_key(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True,
            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False)
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TLSFiles(directory / "ca.pem", directory / "node.pem", directory / "node.key")
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(pem_key(key))
    files.key.chmod(0o600)
    return files


_NODE_EXTENSIONS = """\
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
"""


def _make_pki_openssl(directory: Path, name: str) -> TLSFiles:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("making test certificates needs the cryptography package or openssl")
    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True,
                       timeout=60)

    run("req", "-x509", *ec_key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", f"/CN={name} test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-new", *ec_key, "-keyout", "node.key", "-out", "node.csr",
        "-subj", "/CN=localhost")
    (directory / "node.ext").write_text(_NODE_EXTENSIONS)
    run("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-set_serial", "2", "-out", "node.pem", "-days", "2", "-extfile", "node.ext")
    return TLSFiles(directory / "ca.pem", directory / "node.pem", directory / "node.key")


def make_pki(directory: Path, name: str) -> TLSFiles:
    """A new CA and a certificate it signed for 127.0.0.1 and localhost (PEM files)."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return _make_pki_openssl(directory, name)
    return _make_pki_cryptography(directory, name)


def _security(ca_file: Path, cert: Path, key: Path) -> Security:
    return Security(tls_ca_file=str(ca_file), tls_client_cert=str(cert),
                    tls_client_key=str(key), require_encryption=True)


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The cluster's identity and a rogue one from another, self-signed CA."""
    root = tmp_path_factory.mktemp("pki")
    return make_pki(root / "good", "daskgmm"), make_pki(root / "rogue", "rogue")


@pytest.fixture(scope="module")
def tls_cluster(pki, tmp_path_factory):
    """A TLS-only scheduler with two workers (shared by the tests of this module)."""
    good, _ = pki
    with ProcessCluster(tmp_path_factory.mktemp("tls-cluster"), tls=good, env=ENV) as procs:
        procs.start_scheduler()
        procs.start_worker()
        procs.start_worker()
        with distributed.Client(procs.address, security=_security(*_files(good)),
                                timeout="30s") as client:
            procs.wait_for_workers(client, 2)
        yield procs


def _files(tls: TLSFiles) -> tuple[Path, Path, Path]:
    return tls.ca_file, tls.cert, tls.key


# --------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------
def test_certificates_are_valid_for_loopback(pki):
    good, rogue = pki
    context = ssl.create_default_context(cafile=str(good.ca_file))
    context.load_cert_chain(str(good.cert), str(good.key))
    with pytest.raises(ssl.SSLError):
        ssl.create_default_context(cafile=str(good.ca_file)).load_cert_chain(
            str(good.cert), str(rogue.key))


def test_fit_over_tls_matches_local_fit(tls_cluster, pki):
    good, _ = pki
    assert tls_cluster.address.startswith("tls://127.0.0.1:")
    X = make_blobs(4000, d=3, k=3, seed=5)
    local = GaussianMixture(3, random_state=0, chunk_rows=500).fit(X)
    with distributed.Client(tls_cluster.address, security=_security(*_files(good)),
                            timeout="30s") as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        assert len(workers) == 2
        assert all(address.startswith("tls://") for address in workers)
        remote = GaussianMixture(3, random_state=0).fit(da.from_array(X, chunks=(500, 3)))
        labels = remote.predict(da.from_array(X, chunks=(500, 3))).compute()
    assert remote.n_iter_ == local.n_iter_
    np.testing.assert_allclose(remote.means_, local.means_, rtol=1e-10)
    np.testing.assert_allclose(remote.covariances_, local.covariances_, rtol=1e-10)
    np.testing.assert_allclose(remote.weights_, local.weights_, rtol=1e-10)
    np.testing.assert_allclose(remote.lower_bounds_, local.lower_bounds_, rtol=1e-12)
    np.testing.assert_array_equal(labels, local.predict(X))


def _refused(connect_client, expected: type[BaseException] | tuple = OSError
             ) -> BaseException:
    """Run ``connect_client()``; assert it raises ``expected`` within the timeout.

    (``distributed``'s ``CommClosedError`` and ``TimeoutError`` are ``OSError``s.)
    """
    started = time.monotonic()
    with pytest.raises(expected) as info:
        connect_client()
    assert time.monotonic() - started < REFUSAL_TIMEOUT + 10
    return info.value


def _client_connect(address: str, security: Security | None = None):
    """A function that connects a Client to ``address`` and closes it again.

    The Client runs on a private asyncio loop: a synchronous Client whose constructor
    raised would leave its event-loop thread behind and break later Clients.
    """
    async def main() -> None:
        client = distributed.Client(address, security=security, asynchronous=True,
                                    timeout=REFUSAL_TIMEOUT)
        try:
            await client
        finally:
            await client.close()
    return lambda: asyncio.run(main())


def test_client_without_security_is_refused(tls_cluster):
    """A Client without TLS settings cannot even try: it has no SSL context."""
    error = _refused(_client_connect(tls_cluster.address), TypeError)
    assert "ssl" in str(error).lower() or "tls" in str(error).lower()


def test_plain_tcp_client_is_refused(tls_cluster):
    _refused(_client_connect(tls_cluster.address.replace("tls://", "tcp://")))


@pytest.mark.parametrize(
    "identity",
    ["rogue-ca-and-cert", "rogue-cert", "rogue-ca"],
)
def test_client_with_wrong_certificates_is_refused(tls_cluster, pki, identity):
    good, rogue = pki
    files = {
        "rogue-ca-and-cert": (rogue.ca_file, rogue.cert, rogue.key),  # another PKI
        "rogue-cert": (good.ca_file, rogue.cert, rogue.key),  # server must refuse it
        "rogue-ca": (rogue.ca_file, good.cert, good.key),  # client must refuse server
    }[identity]
    _refused(_client_connect(tls_cluster.address, _security(*files)))


def test_client_without_a_certificate_is_refused(tls_cluster, pki):
    """Trusting the right CA is not enough: the scheduler wants a client certificate."""
    good, _ = pki
    from distributed.comm import connect

    async def identity():
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                             cafile=str(good.ca_file))
        comm = await connect(tls_cluster.address, timeout=REFUSAL_TIMEOUT,
                             ssl_context=context)
        try:
            await comm.write({"op": "identity"})
            return await comm.read()
        finally:
            comm.abort()

    _refused(lambda: asyncio.run(identity()))


def test_worker_with_rogue_certificate_never_joins(tls_cluster, pki, tmp_path):
    good, rogue = pki
    with ProcessCluster(tmp_path, tls=rogue, env=ENV, death_timeout=4) as intruder:
        # The intruder knows where the scheduler is, but not its keys.
        intruder.use_scheduler(tls_cluster.scheduler_file)
        proc = intruder.start_worker(name="intruder")
        try:
            proc.wait(timeout=60)
        except Exception:  # pragma: no cover - reported below
            pass
        assert proc.returncode not in (None, 0), intruder.logs()
    with distributed.Client(tls_cluster.address, security=_security(*_files(good)),
                            timeout="30s") as client:
        names = [w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()]
    assert sorted(names) == ["worker-0", "worker-1"]
