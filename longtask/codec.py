"""AES-GCM payload encryption, so Temporal's history and the payload store hold only ciphertext.

Keys are ``keyid:base64key`` entries: comma-separated in ``LTM_PAYLOAD_KEYS`` or one per line
in ``LTM_PAYLOAD_KEY_FILE``. The first key encrypts; every listed key decrypts, so a key rotates
by putting a new one first and dropping the old one once no history still needs it. Each payload
names its key in the ``encryption-key-id`` metadata; errors name key ids, never keys.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

if TYPE_CHECKING:
    from longtask.settings import Settings

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
NONCE_BYTES = 12
KEY_SIZES = (16, 24, 32)
KEYS_VARIABLE = "LTM_PAYLOAD_KEYS"
KEY_FILE_VARIABLE = "LTM_PAYLOAD_KEY_FILE"


class PayloadKeyError(ValueError):
    """A payload key that is missing, malformed or unknown; the message never holds a key."""


class PayloadDecryptionError(ValueError):
    """A payload that does not decrypt: tampered with, or encrypted with another key."""


@dataclass(frozen=True)
class KeyRing:
    """The key that encrypts, and every key that decrypts, by key id."""

    current: str
    keys: dict[str, AESGCM]


def parse_keys(text: str, source: str) -> list[tuple[str, bytes]]:
    """``keyid:base64key`` entries split by commas or lines; blank entries and ``#`` lines skip."""
    entries: list[tuple[str, bytes]] = []
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        for item in line.split(","):
            entry = item.strip()
            if not entry:
                continue
            key_id, sep, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not sep or not key_id:
                raise PayloadKeyError(
                    f"{source}: entry {len(entries) + 1} must look like keyid:base64key"
                )
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise PayloadKeyError(f"{source}: key {key_id!r} is not valid base64") from None
            if len(key) not in KEY_SIZES:
                raise PayloadKeyError(
                    f"{source}: key {key_id!r} is {len(key)} bytes; AES-GCM keys must be "
                    "16, 24 or 32 bytes (e.g. `openssl rand -base64 32`)"
                )
            entries.append((key_id, key))
    return entries


def load_keyring(keys: SecretStr | None, key_file: Path | None) -> KeyRing:
    """Keys of the variable first, then of the file; the very first one encrypts."""
    entries = parse_keys(keys.get_secret_value(), KEYS_VARIABLE) if keys is not None else []
    if key_file is not None:
        try:
            text = key_file.read_text()
        except OSError as error:
            raise PayloadKeyError(
                f"{KEY_FILE_VARIABLE}: cannot read {key_file}: {error.strerror}"
            ) from None
        entries += parse_keys(text, f"{KEY_FILE_VARIABLE} ({key_file})")
    if not entries:
        raise PayloadKeyError(
            f"payload encryption needs a key: set {KEYS_VARIABLE} (keyid:base64key,...) "
            f"or {KEY_FILE_VARIABLE} (one keyid:base64key per line)"
        )
    ring: dict[str, AESGCM] = {}
    seen: dict[str, bytes] = {}
    for key_id, key in entries:
        if key_id in seen and seen[key_id] != key:
            raise PayloadKeyError(f"key id {key_id!r} is listed twice with different keys")
        seen[key_id] = key
        ring[key_id] = AESGCM(key)
    return KeyRing(current=entries[0][0], keys=ring)


class EncryptionCodec(PayloadCodec):
    """Encrypts every payload whole (metadata and data) with the current key.

    The key id is authenticated data too: a payload relabelled with another key id fails.
    Payloads without the ``binary/encrypted`` encoding pass through ``decode`` unchanged, so
    histories written before encryption was turned on still read.
    """

    def __init__(self, ring: KeyRing) -> None:
        super().__init__()
        self._ring = ring

    @property
    def current_key_id(self) -> str:
        return self._ring.current

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        key_id = self._ring.current
        cipher = self._ring.keys[key_id]
        encoded = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            data = cipher.encrypt(nonce, payload.SerializeToString(), key_id.encode())
            encoded.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()},
                    data=nonce + data,
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decode_one(payload) for payload in payloads]

    def _decode_one(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        cipher = self._ring.keys.get(key_id)
        if cipher is None:
            raise PayloadKeyError(
                f"payload encrypted with key id {key_id!r}, which is not among the keys of "
                f"{KEYS_VARIABLE} / {KEY_FILE_VARIABLE} (known: {', '.join(self._ring.keys)})"
            )
        try:
            plain = cipher.decrypt(
                payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], key_id.encode()
            )
        except InvalidTag:
            raise PayloadDecryptionError(
                f"payload encrypted with key id {key_id!r} does not authenticate: it was "
                "altered, or that key id names a different key than the one it was encrypted with"
            ) from None
        return Payload.FromString(plain)


def codec_from_keys(keys: SecretStr | None, key_file: Path | None) -> EncryptionCodec:
    return EncryptionCodec(load_keyring(keys, key_file))


def payload_codec(settings: Settings) -> EncryptionCodec | None:
    """The codec every client and worker uses, or None while LTM_ENCRYPT_PAYLOADS is off."""
    if not settings.encrypt_payloads:
        return None
    return codec_from_keys(settings.payload_keys, settings.payload_key_file)
