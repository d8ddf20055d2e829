"""A small OpenAI-compatible server on loopback whose final-model stream fails with an error
that echoes the request's ``Authorization`` header, as some proxies and providers do."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

WORDS = ["The", " quarter", " went", " well", "."]


def _chunk(model: str, content: str | None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "id": "chatcmpl-echo",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class _Handler(BaseHTTPRequestHandler):
    server: EchoServer._Http

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read outcomes, not access logs."""

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path.endswith("/embeddings"):
            self._embeddings(body)
        elif self.path.endswith("/chat/completions"):
            self._chat(body)
        else:
            self.send_error(404)

    def _json(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _embeddings(self, body: dict[str, Any]) -> None:
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [1.0, float(len(t) % 7), 0.5]}
            for i, t in enumerate(texts)
        ]
        usage = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
        self._json({"object": "list", "data": data, "model": body["model"], "usage": usage})

    def _event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
        self.wfile.flush()

    def _chat(self, body: dict[str, Any]) -> None:
        model = str(body["model"])
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        for word in WORDS:
            self._event(_chunk(model, word))
        if model == self.server.failing_model:
            echoed = self.headers.get("authorization", "")
            message = f"upstream refused the request; headers: {{'authorization': '{echoed}'}}"
            self._event({"error": {"message": message, "type": "upstream_error"}})
            return
        self._event(_chunk(model, None, "stop"))
        usage = {"prompt_tokens": 5, "completion_tokens": len(WORDS), "total_tokens": 10}
        self._event({**_chunk(model, None), "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")


class EchoServer:
    """Serves embeddings and chat on a free loopback port; ``failing_model``'s streams fail."""

    class _Http(ThreadingHTTPServer):
        failing_model = ""

    def __init__(self, failing_model: str) -> None:
        self._http = self._Http(("127.0.0.1", 0), _Handler)
        self._http.failing_model = failing_model
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=10)
