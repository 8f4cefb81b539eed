"""TLS serving (https + wss with a self-signed certificate) and the client's device errors."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from client.cli import main as client_main
from client.echo_client import ClientError, EchoClient
from echo_core.config import SieveConfig, StreamConfig
from echo_core.model.backend import OmniBackend
from echo_core.sieve import CS2
from echo_core.stream.runtime import StreamModel
from echo_lab.world import make_clip
from echo_lab.world.containers import write_webm
from server.app import EchoServer
from server.config import ServerConfig, ServiceConfig
from tests.waiting import wait_ingested

pytestmark = pytest.mark.e2e

KEY = "tls-key-0123456789"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest_asyncio.fixture
async def tls_server(backend: OmniBackend, cs2: CS2, tmp_path: Path) -> AsyncIterator[EchoServer]:
    cert, key = self_signed(tmp_path)
    config = ServiceConfig(
        stream=StreamConfig(cache_budget=256, max_new_tokens=3),
        server=ServerConfig(port=0, api_keys=[KEY], tls_cert=str(cert), tls_key=str(key)),
    )
    srv = EchoServer(config, model=StreamModel(backend, cs2, SieveConfig(scoring="attention")))
    await srv.start()
    yield srv
    await srv.stop()


@pytest.mark.asyncio
async def test_https_and_wss_with_a_self_signed_certificate(tls_server: EchoServer, tmp_path: Path) -> None:
    assert tls_server.url.startswith("https://")
    trust = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{tls_server.url}/healthz", ssl=trust) as r:
            assert r.status == 200
        with pytest.raises(aiohttp.ClientConnectorCertificateError):  # not trusted without the CA
            await http.get(f"{tls_server.url}/healthz")
        plain = tls_server.url.replace("https", "http", 1)
        with pytest.raises(aiohttp.ClientError):  # no plain HTTP on the TLS port
            await http.get(f"{plain}/healthz")
    with pytest.raises(ClientError) as info:
        await EchoClient(tls_server.url, KEY).connect()
    assert info.value.code == "server_unreachable" and "certificate" in info.value.message.lower()
    async with EchoClient(tls_server.url, KEY, ssl_context=trust) as client:  # wss://…/ws
        await client.stream_file(str(write_webm(make_clip("test", 1), tmp_path / "clip.webm")))
        live = tls_server.sessions.live[client.session_id]
        await wait_ingested(live.session, 1)
        await client.ask_text("what colour", window_s=30)
        assert client.last_done is not None and client.last_done.status == "completed"


@pytest.mark.asyncio
async def test_cli_says_when_there_is_no_camera_or_microphone(
    tls_server: EchoServer, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    base = ["--server", tls_server.url, "--api-key", KEY, "--cafile", str(tmp_path / "cert.pem")]
    rc = await asyncio.to_thread(client_main, [*base, "stream", "--camera", str(tmp_path / "video9")])
    assert rc == 1 and "no_camera: cannot open camera" in capfd.readouterr().err
    try:
        import sounddevice

        has_microphone = any(d["max_input_channels"] > 0 for d in sounddevice.query_devices())
    except OSError:  # no PortAudio: no microphone either
        has_microphone = False
    if has_microphone:
        pytest.skip("this machine has a microphone")
    rc = await asyncio.to_thread(client_main, [*base, "stream", "--mic"])
    assert rc == 1 and "no_microphone" in capfd.readouterr().err
