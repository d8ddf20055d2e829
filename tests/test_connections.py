"""Remote Temporal and Redis: passwords, TLS with a private CA, mutual TLS, API keys; a setting
that cannot work fails at start-up by name, and no password or key is ever shown.

Real servers throughout: a Redis that requires a password, and TLS endpoints (a private CA made
here) in front of that Redis and of the test session's Temporal server. Temporal Cloud cannot be
reached from here, so its API key is checked where it is handed to the SDK."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import re
import secrets
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import pytest
import redis.exceptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from temporalio.client import Client
from temporalio.service import TLSConfig

from longtask.connections import connect_redis, connect_temporal, temporal_target
from longtask.settings import Settings, SettingsError, load_settings, redact_url
from longtask.tooling.servers import RedisServer
from tests.conftest import ROOT

TEMPORAL_NAME = "temporal.ltm.test"  # the only name on the Temporal endpoint's certificate


# --- a private CA -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    temporal_server: Issued  # for TEMPORAL_NAME only
    redis_server: Issued  # for 127.0.0.1
    client: Issued


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(folder: Path) -> Pki:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("ltm test CA"))
        .issuer_name(_name("ltm test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(stem: str, names: list[x509.GeneralName], usage: x509.ObjectIdentifier) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(stem))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        issued = Issued(folder / f"{stem}.pem", folder / f"{stem}-key.pem")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return issued

    server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    return Pki(
        ca=folder / "ca.pem",
        temporal_server=issue("temporal", [x509.DNSName(TEMPORAL_NAME)], server),
        redis_server=issue("redis", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], server),
        client=issue("worker", [x509.DNSName("worker.ltm.test")], client),
    )


# --- servers ------------------------------------------------------------------------------------


class PasswordRedis(RedisServer):
    """The session's kind of Redis, with ``requirepass``."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.password = secrets.token_urlsafe(16)

    def url_with(self, password: str | None, scheme: str = "redis", port: int = 0) -> str:
        userinfo = f":{password}@" if password is not None else ""
        return f"{scheme}://{userinfo}127.0.0.1:{port or self.port}/0"

    def command(self) -> list[str]:
        return [*super().command(), "--requirepass", self.password]


class TlsFront:
    """A TLS endpoint on a free loopback port that hands the decrypted bytes to a plain server,
    the way a TLS-terminating proxy or a managed service's front end does."""

    def __init__(self, backend_port: int, context: ssl.SSLContext) -> None:
        self.backend_port = backend_port
        self.context = context
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError:
            writer.close()
            return
        self._writers.append(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()


def server_context(issued: Issued, client_ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.cert, issued.key)
    context.set_alpn_protocols(["h2"])  # gRPC runs on HTTP/2
    if client_ca is not None:  # mutual TLS: no client certificate from this CA, no connection
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PasswordRedis]:
    with PasswordRedis(tmp_path_factory.mktemp("redis-password")) as server:
        yield server


@pytest.fixture
def no_ltm_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("LTM_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
async def mtls_temporal(client: Client, pki: Pki) -> AsyncIterator[TlsFront]:
    """The session's Temporal server behind mutual TLS, as a self-hosted cluster would be."""
    port = int(client.service_client.config.target_host.rpartition(":")[2])
    context = server_context(pki.temporal_server, client_ca=pki.ca)
    async with TlsFront(port, context) as front:
        yield front


def temporal_settings(front: TlsFront, tmp_path: Path, **tls: object) -> Settings:
    return Settings.model_validate(
        {"temporal_address": f"127.0.0.1:{front.port}", "payload_dir": tmp_path, **tls}
    )


# --- Redis --------------------------------------------------------------------------------------


async def test_redis_password_in_the_url_is_used(password_redis: PasswordRedis) -> None:
    settings = Settings(redis_url=password_redis.url_with(password_redis.password))
    connection = connect_redis(settings)
    try:
        assert await connection.ping()
        await connection.set("ltm:password-test", "ok")
        assert await connection.get("ltm:password-test") == "ok"
    finally:
        await connection.aclose()


@pytest.mark.parametrize("password", [None, "not-the-password"])
async def test_redis_refuses_a_missing_or_wrong_password(
    password_redis: PasswordRedis, password: str | None
) -> None:
    connection = connect_redis(Settings(redis_url=password_redis.url_with(password)))
    try:
        with pytest.raises(redis.exceptions.AuthenticationError) as refused:
            await connection.ping()
    finally:
        await connection.aclose()
    assert password_redis.password not in str(refused.value)


async def test_rediss_with_a_private_ca(password_redis: PasswordRedis, pki: Pki) -> None:
    context = server_context(pki.redis_server)
    context.set_alpn_protocols([])  # Redis speaks no ALPN
    async with TlsFront(password_redis.port, context) as front:
        url = password_redis.url_with(password_redis.password, "rediss", front.port)
        trusted = connect_redis(Settings(redis_url=url, redis_tls_ca=pki.ca))
        untrusted = connect_redis(Settings(redis_url=url))  # the system's CAs only
        try:
            assert await trusted.ping()
            with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify"):
                await untrusted.ping()
        finally:
            await trusted.aclose()
            await untrusted.aclose()


def test_redis_password_is_never_shown(no_ltm_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    password = secrets.token_urlsafe(16)
    settings = Settings(redis_url=f"redis://worker:{password}@cache.internal:6380/2")
    assert password not in repr(settings) and password not in str(settings)
    assert "redis://worker:***@cache.internal:6380/2" in repr(settings)
    assert redact_url(f"unix:///run/redis.sock?db=1&password={password}") == (
        "unix:///run/redis.sock?db=1&password=***"
    )
    # A URL the product refuses is named in the error, its password masked.
    no_ltm_env.setenv("LTM_REDIS_URL", f"http://:{password}@cache.internal:6380/0")
    with pytest.raises(SettingsError, match="LTM_REDIS_URL") as refused:
        load_settings()
    assert password not in str(refused.value) and ":***@cache.internal" in str(refused.value)
    # `make status` prints where each service is, not how to log in.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LTM_")},
        "LTM_REDIS_URL": f"redis://:{password}@127.0.0.1:1/0",
        "LTM_STATE_DIR": str(tmp_path),
    }
    status = subprocess.run(
        [sys.executable, "-m", "longtask.tooling.stack", "status"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "redis" in status.stdout and "127.0.0.1:1" in status.stdout
    assert password not in status.stdout + status.stderr


# --- Temporal: what the settings hand to Client.connect -----------------------------------------


def test_plain_connection_by_default() -> None:
    target = temporal_target(Settings())
    assert (target.address, target.namespace) == ("127.0.0.1:7233", "default")
    assert target.tls is False and target.api_key is None


def test_target_carries_the_certificates_the_key_and_the_namespace(pki: Pki) -> None:
    api_key = secrets.token_urlsafe(24)
    settings = Settings(
        temporal_address="ltm.a1b2c.tmprl.cloud:7233",
        temporal_namespace="ltm.a1b2c",
        temporal_tls_cert=pki.client.cert,
        temporal_tls_key=pki.client.key,
        temporal_tls_ca=pki.ca,
        temporal_tls_server_name=TEMPORAL_NAME,
        temporal_api_key=api_key,
    )
    target = temporal_target(settings)
    assert (target.address, target.namespace) == ("ltm.a1b2c.tmprl.cloud:7233", "ltm.a1b2c")
    assert target.tls == TLSConfig(
        server_root_ca_cert=pki.ca.read_bytes(),
        domain=TEMPORAL_NAME,
        client_cert=pki.client.cert.read_bytes(),
        client_private_key=pki.client.key.read_bytes(),
    )
    assert target.api_key == api_key
    shown = repr(target) + repr(settings)
    assert api_key not in shown and "PRIVATE KEY" not in shown


def test_api_key_alone_is_sent_over_tls_with_the_system_roots() -> None:
    """Temporal Cloud with an API key: the regional endpoint, TLS, the public CAs."""
    target = temporal_target(
        Settings(
            temporal_address="us-east-1.aws.api.temporal.io:7233",
            temporal_namespace="ltm.a1b2c",
            temporal_api_key="an-api-key-value",
        )
    )
    assert target.tls == TLSConfig() and target.api_key == "an-api-key-value"


def test_tls_can_be_asked_for_alone(no_ltm_env: pytest.MonkeyPatch) -> None:
    no_ltm_env.setenv("LTM_TEMPORAL_TLS", "true")
    assert temporal_target(load_settings()).tls == TLSConfig()


# --- Temporal: real connections through TLS -----------------------------------------------------


async def test_mutual_tls_connects_with_the_client_certificate(
    mtls_temporal: TlsFront, pki: Pki, tmp_path: Path
) -> None:
    settings = temporal_settings(
        mtls_temporal,
        tmp_path,
        temporal_tls_cert=pki.client.cert,
        temporal_tls_key=pki.client.key,
        temporal_tls_ca=pki.ca,
        temporal_tls_server_name=TEMPORAL_NAME,
    )
    async with asyncio.timeout(60):
        connected = await connect_temporal(settings)
        assert await connected.service_client.check_health()
    assert connected.namespace == "default"


@pytest.mark.parametrize("missing", ["client certificate", "server name"])
async def test_mutual_tls_refuses_what_does_not_match(
    mtls_temporal: TlsFront, pki: Pki, tmp_path: Path, missing: str
) -> None:
    tls: dict[str, object] = {
        "temporal_tls_cert": pki.client.cert,
        "temporal_tls_key": pki.client.key,
        "temporal_tls_ca": pki.ca,
        "temporal_tls_server_name": TEMPORAL_NAME,
    }
    if missing == "client certificate":
        del tls["temporal_tls_cert"], tls["temporal_tls_key"]
    else:  # dialled as 127.0.0.1, which the server's certificate does not name
        del tls["temporal_tls_server_name"]
    settings = temporal_settings(mtls_temporal, tmp_path, **tls)
    async with asyncio.timeout(60):
        with pytest.raises(RuntimeError):
            connected = await connect_temporal(settings)
            await connected.service_client.check_health()


async def test_api_key_over_tls_reaches_the_server(
    client: Client, pki: Pki, tmp_path: Path
) -> None:
    """The key travels as call metadata over TLS (the test server accepts any key)."""
    port = int(client.service_client.config.target_host.rpartition(":")[2])
    async with TlsFront(port, server_context(pki.temporal_server)) as front:
        settings = temporal_settings(
            front,
            tmp_path,
            temporal_api_key=secrets.token_urlsafe(24),
            temporal_tls_ca=pki.ca,
            temporal_tls_server_name=TEMPORAL_NAME,
        )
        async with asyncio.timeout(60):
            connected = await connect_temporal(settings)
            assert await connected.service_client.check_health()
        assert connected.service_client.config.api_key == temporal_target(settings).api_key


# --- settings that cannot work ------------------------------------------------------------------


def test_certificate_and_key_go_together(no_ltm_env: pytest.MonkeyPatch, pki: Pki) -> None:
    no_ltm_env.setenv("LTM_TEMPORAL_TLS_CERT", str(pki.client.cert))
    with pytest.raises(SettingsError, match="LTM_TEMPORAL_TLS_KEY is missing"):
        load_settings()
    no_ltm_env.delenv("LTM_TEMPORAL_TLS_CERT")
    no_ltm_env.setenv("LTM_TEMPORAL_TLS_KEY", str(pki.client.key))
    with pytest.raises(SettingsError, match="LTM_TEMPORAL_TLS_CERT is missing"):
        load_settings()
    no_ltm_env.setenv("LTM_TEMPORAL_TLS_CERT", str(pki.client.cert))
    assert load_settings().temporal_tls_enabled


@pytest.mark.parametrize(
    "variable", ["LTM_TEMPORAL_TLS_CERT", "LTM_TEMPORAL_TLS_CA", "LTM_REDIS_TLS_CA"]
)
def test_unreadable_file_is_named(
    no_ltm_env: pytest.MonkeyPatch, pki: Pki, tmp_path: Path, variable: str
) -> None:
    if variable == "LTM_TEMPORAL_TLS_CERT":
        no_ltm_env.setenv("LTM_TEMPORAL_TLS_KEY", str(pki.client.key))
    if variable == "LTM_REDIS_TLS_CA":
        no_ltm_env.setenv("LTM_REDIS_URL", "rediss://cache.internal:6380/0")
    missing = tmp_path / "nowhere" / "file.pem"
    no_ltm_env.setenv(variable, str(missing))
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert f"{variable}: Value error, cannot read {missing}: No such file" in str(refused.value)
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate")
    no_ltm_env.setenv(variable, str(not_pem))
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert re.search(f"{variable}: .*{re.escape(str(not_pem))} is not a PEM", str(refused.value))


def test_redis_ca_needs_a_tls_url(no_ltm_env: pytest.MonkeyPatch, pki: Pki) -> None:
    no_ltm_env.setenv("LTM_REDIS_TLS_CA", str(pki.ca))
    with pytest.raises(SettingsError, match=r"LTM_REDIS_TLS_CA .* LTM_REDIS_URL .* rediss://"):
        load_settings()
    no_ltm_env.setenv("LTM_REDIS_URL", "rediss://cache.internal:6380/0")
    assert load_settings().redis_tls_ca == pki.ca


def test_blank_variables_are_unset(no_ltm_env: pytest.MonkeyPatch) -> None:
    """As compose writes a variable the shell does not set."""
    for variable in (
        "LTM_TEMPORAL_TLS_CERT", "LTM_TEMPORAL_TLS_KEY", "LTM_TEMPORAL_TLS_CA",
        "LTM_TEMPORAL_TLS_SERVER_NAME", "LTM_TEMPORAL_API_KEY", "LTM_REDIS_TLS_CA",
    ):  # fmt: skip
        no_ltm_env.setenv(variable, "")
    settings = load_settings()
    assert not settings.temporal_tls_enabled and settings.redis_tls_ca is None


def test_api_key_is_a_secret(no_ltm_env: pytest.MonkeyPatch) -> None:
    api_key = secrets.token_urlsafe(24)
    no_ltm_env.setenv("LTM_TEMPORAL_API_KEY", api_key)
    settings = load_settings()
    assert settings.temporal_api_key is not None
    assert settings.temporal_api_key.get_secret_value() == api_key
    assert api_key not in repr(settings) and api_key not in settings.model_dump_json()
