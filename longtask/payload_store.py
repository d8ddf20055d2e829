"""Large payloads kept out of Temporal's history, in files named by their SHA-256.

Temporal's external storage hands every payload above a size threshold to this driver and keeps
only a small reference in the history, so long documents and many page summaries never come
near the 2 MB payload or 50 MB history limits. Workers and clients of one deployment must see
the same folder (a shared volume); a deployment across machines swaps in the SDK's S3 or GCS
driver instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    ExternalStorage,
    PayloadCodec,
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)

DRIVER_NAME = "ltm-files"


def _touched(path: Path) -> bool:
    """Mark a payload as used now: retention (longtask/retention.py) deletes files by age, and
    a file stored once may be named again by a new task or read again by a replay. False when
    the file is gone (pruned meanwhile)."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


class FilePayloadStore(StorageDriver):
    """Content-addressed files: the same bytes are stored once, and are checked when read."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def name(self) -> str:
        return DRIVER_NAME

    def _path(self, digest: str) -> Path:
        return self._directory / digest[:2] / digest

    def _write(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if path.exists() and _touched(path):
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(data)
        # A rename is atomic: a reader never sees half a payload.
        partial.replace(path)
        return digest

    def _read(self, digest: str) -> bytes:
        path = self._path(digest)
        data = path.read_bytes()
        _touched(path)
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"stored payload {digest} is corrupt")
        return data

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        claims = []
        for payload in payloads:
            digest = await asyncio.to_thread(self._write, payload.SerializeToString())
            claims.append(StorageDriverClaim(claim_data={"sha256": digest}))
        return claims

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        payloads = []
        for claim in claims:
            data = await asyncio.to_thread(self._read, claim.claim_data["sha256"])
            payloads.append(Payload.FromString(data))
        return payloads


def data_converter(
    directory: Path, threshold_bytes: int, codec: PayloadCodec | None = None
) -> DataConverter:
    """Pydantic payloads, with those of ``threshold_bytes`` or more stored in ``directory``.

    With a ``codec`` (payload encryption), the SDK encodes a payload *before* it weighs it for
    external storage (``DataConverter._transform_outbound_payloads``: codec, then storage), so
    the store's files hold the encrypted bytes and the history keeps only a reference (driver
    name and the SHA-256 of that ciphertext): no plaintext at rest in either place. The price
    is that the store no longer shares identical payloads (each encryption has its own nonce).
    Failure messages and stack traces go into an encoded payload too, since they may quote a
    document (name, provider error text); without a codec they stay readable in the UI.
    """
    storage = ExternalStorage(
        drivers=[FilePayloadStore(directory)], payload_size_threshold=threshold_bytes
    )
    if codec is None:
        return dataclasses.replace(pydantic_data_converter, external_storage=storage)
    return dataclasses.replace(
        pydantic_data_converter,
        external_storage=storage,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
