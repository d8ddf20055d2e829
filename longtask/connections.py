"""Connections every process makes the same way: Temporal with pydantic payloads, and Redis."""

from __future__ import annotations

from redis.asyncio import Redis
from temporalio.client import Client

from longtask.payload_store import data_converter
from longtask.settings import Settings


async def connect_temporal(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings.payload_folder, settings.payload_threshold_bytes),
    )


def connect_redis(settings: Settings) -> Redis:
    # Bounded socket timeouts: a slow or absent Redis must not hold up a task's workflow.
    return Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
    )
