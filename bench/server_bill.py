"""What the LLM server served, counted the way it bills: from its own request log.

The local LLM server (llmock) logs every request with its body and the chunks it streamed, but
not the tokens it counted. Its answers are a pure function of model and prompt, so the bill is
rebuilt with the server's own functions: prompt tokens as it estimates them, and completion
tokens of the pieces it actually sent (a stream cut by a dying worker is billed for what went
out, as a real provider bills it).
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from typing import Any

from llmock.routers._chat import prompt_of
from llmock.simulation import MockResponseSettings, build_mock_text, estimate_tokens
from llmock.streaming import text_pieces
from pydantic import BaseModel

from longtask.settings import Settings

# A streamed answer opens with a role chunk before its first piece of text.
_LEADING_CHUNKS = 1


class ServerBill(BaseModel):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    # Requests whose body the server had already answered in full once before in this log.
    repeated_requests: int
    repeated_completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _admin_url(settings: Settings, path: str) -> str:
    host, port = settings.llm_host_port
    return f"http://{host}:{port}/_llmock/{path}"


def server_requests(settings: Settings) -> list[dict[str, Any]]:
    """Every request the stack's LLM server logged, oldest first (it keeps the last 10,000)."""
    with urllib.request.urlopen(_admin_url(settings, "requests"), timeout=60) as answer:
        records: list[dict[str, Any]] = json.loads(answer.read())["requests"]
    return records


def forget_requests(settings: Settings) -> None:
    request = urllib.request.Request(_admin_url(settings, "requests"), method="DELETE")
    with urllib.request.urlopen(request, timeout=10):
        pass


def add_behaviors(settings: Settings, *behaviors: dict[str, Any]) -> None:
    """Queue server behaviours (faults, delays), e.g. ``{"type": "fail", "status": 500}``."""
    request = urllib.request.Request(
        _admin_url(settings, "scenario"),
        data=json.dumps({"behaviors": list(behaviors)}).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def completion_tokens_sent(record: dict[str, Any]) -> int:
    """Completion tokens of what the server streamed (or returned) for one chat request."""
    body = record.get("body") or {}
    if not record["path"].endswith("/chat/completions") or not isinstance(body, dict):
        return 0
    if record["status"] != 200:
        return 0
    prompt_text, _ = prompt_of(body.get("messages") or [])
    text = build_mock_text(settings=MockResponseSettings(), model=body["model"], prompt=prompt_text)
    if not record.get("stream"):
        return max(1, estimate_tokens(text))
    pieces = text_pieces(text)
    sent = max(0, min(len(pieces), record.get("chunks_sent", 0) - _LEADING_CHUNKS))
    if sent == len(pieces):
        return max(1, estimate_tokens(text))
    return estimate_tokens("".join(pieces[:sent]))


def prompt_tokens_of(record: dict[str, Any]) -> int:
    body = record.get("body") or {}
    if not isinstance(body, dict):
        return 0
    if record["path"].endswith("/embeddings"):
        inputs = body.get("input", [])
        return estimate_tokens(*(inputs if isinstance(inputs, list) else [inputs]))
    return prompt_of(body.get("messages") or [])[1]


def bill(records: list[dict[str, Any]]) -> ServerBill:
    """The bill of a request log; a request is repeated when its body was answered before."""
    answered: Counter[str] = Counter()
    repeated = repeated_tokens = 0
    prompt = completion = 0
    for record in records:
        sent = completion_tokens_sent(record)
        prompt += prompt_tokens_of(record)
        completion += sent
        if answered[record["fingerprint"]]:
            repeated += 1
            repeated_tokens += sent
        if record["status"] == 200 and record.get("completed"):
            answered[record["fingerprint"]] += 1
    return ServerBill(
        requests=len(records),
        prompt_tokens=prompt,
        completion_tokens=completion,
        repeated_requests=repeated,
        repeated_completion_tokens=repeated_tokens,
    )
