"""Blanking secrets in error text before it leaves an activity (history, Redis, logs).

A provider may echo the request back in its error, ``Authorization: Bearer sk-...`` included.
Every text that carries a provider's words out of the worker goes through ``redact`` first.
"""

from __future__ import annotations

import re

BLANK = "***"
# Credentials by their shape, whatever key the worker holds: a bearer or basic token, an
# OpenAI-style key, and the value of a header or field named like a key.
_SCHEME_TOKEN = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]+")
_KEY_SHAPED = re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_-]{6,}")
_NAMED_KEY = re.compile(
    r"(?i)\b(authorization|x-api-key|api[-_]?key|access[-_]?token)"
    r"""(["']?\s*[:=]\s*["']?)(?!\*\*\*|bearer\s|basic\s)[^\s"',;}]+"""
)


def redact(text: str, *secrets: str) -> str:
    """``text`` with each of ``secrets`` and anything shaped like a credential blanked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, BLANK)
    text = _SCHEME_TOKEN.sub(rf"\1\2{BLANK}", text)
    text = _KEY_SHAPED.sub(rf"\1-{BLANK}", text)
    return _NAMED_KEY.sub(rf"\1\2{BLANK}", text)
