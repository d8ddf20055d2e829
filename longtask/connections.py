"""Connections every process makes the same way: Temporal with pydantic payloads, and Redis."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import BlockingConnectionPool, Redis
from temporalio.client import Client
from temporalio.service import TLSConfig

from longtask.codec import payload_codec
from longtask.payload_store import data_converter
from longtask.redis_auth import embedded_password
from longtask.settings import Settings, SettingsError
from longtask.temporal_runtime import temporal_runtime
from longtask.tracing import tracing_interceptors


@dataclass(frozen=True)
class TemporalTarget:
    """Where and how to reach Temporal: the arguments of ``Client.connect`` that the settings
    decide. The TLS material and the API key stay out of the repr."""

    address: str
    namespace: str
    tls: TLSConfig | bool = field(default=False, repr=False)
    api_key: str | None = field(default=None, repr=False)


def _read(path: Path | None, variable: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:  # checked at start-up; this is a file gone since
        raise SettingsError(f"{variable}: cannot read {path}: {error.strerror}") from None


def temporal_target(settings: Settings) -> TemporalTarget:
    """The address, namespace, TLS (mutual with a client certificate) and API key to use."""
    tls: TLSConfig | bool = False
    if settings.temporal_tls_enabled:
        tls = TLSConfig(
            server_root_ca_cert=_read(settings.temporal_tls_ca, "LTM_TEMPORAL_TLS_CA"),
            domain=settings.temporal_tls_server_name,
            client_cert=_read(settings.temporal_tls_cert, "LTM_TEMPORAL_TLS_CERT"),
            client_private_key=_read(settings.temporal_tls_key, "LTM_TEMPORAL_TLS_KEY"),
        )
    key = settings.temporal_api_key
    return TemporalTarget(
        address=settings.temporal_address,
        namespace=settings.temporal_namespace,
        tls=tls,
        api_key=key.get_secret_value() if key is not None else None,
    )


async def connect_temporal(settings: Settings) -> Client:
    target = temporal_target(settings)
    return await Client.connect(
        target.address,
        namespace=target.namespace,
        data_converter=data_converter(
            settings.payload_folder, settings.payload_threshold_bytes, payload_codec(settings)
        ),
        tls=target.tls,
        api_key=target.api_key,
        interceptors=tracing_interceptors(settings),
        runtime=temporal_runtime(),
    )


def redis_options(settings: Settings) -> dict[str, Any]:
    """Password, TLS and socket timeouts of every Redis connection, async or not."""
    options: dict[str, Any] = {}
    if settings.redis_tls_ca is not None:
        options["ssl_ca_certs"] = str(settings.redis_tls_ca)
    # The embedded Redis of `make up` has a password of its own, kept in the state folder.
    password = embedded_password(settings)
    if password is not None:
        options["password"] = password
    # Bounded socket timeouts: a slow or absent Redis must not hold up a task's workflow.
    return {
        "decode_responses": True,
        "socket_timeout": 2.0,
        "socket_connect_timeout": 2.0,
        **options,
    }


def connect_redis(settings: Settings) -> Redis:
    """Redis at the URL (with its password, if any, or the embedded Redis's; rediss:// for
    TLS, verified against LTM_REDIS_TLS_CA when set, else the system's CAs)."""
    return Redis.from_url(settings.redis_url, **redis_options(settings))


def connect_redis_sync(settings: Settings) -> SyncRedis:
    """The same Redis for a thread of its own, off the event loop (the checkpoint sink)."""
    return SyncRedis.from_url(settings.redis_url, **redis_options(settings))


def connect_named_redis(settings: Settings, name: str) -> Redis:
    """One connection to Redis, named ``name`` (``CLIENT SETNAME``, sent again on every
    reconnect), shared by every command and pipeline of the returned client: while the
    process lives Redis lists it under that name, and it is gone once the process dies."""
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=1,
        timeout=5,
        client_name=name,
        **redis_options(settings),
    )
    return Redis.from_pool(pool)
