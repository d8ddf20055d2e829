"""The codec server: lets the Temporal UI and CLI show payloads encrypted by ``longtask.codec``.

  python -m longtask.tooling.codec_server [--host 127.0.0.1] [--port 8081]

POST /decode and /encode take and return ``{"payloads": [{"metadata": {k: base64}, "data":
base64}]}``, the codec-server format of the Temporal UI (``temporal server start-dev
--ui-codec-endpoint http://127.0.0.1:8081``). Whoever reaches it can decrypt, so it listens on
127.0.0.1 unless told otherwise, browsers may call it only from the UI's origins, and it
answers only requests addressed to its own names (``Host``), so a web page that points a name
of its own at 127.0.0.1 (DNS rebinding) gets nothing from it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from longtask.codec import EncryptionCodec, PayloadDecryptionError, PayloadKeyError, codec_from_keys
from longtask.process_exit import exit_now
from longtask.settings import Settings, SettingsError, load_settings

# A request holds a few history payloads, each at most 2 MB: anything far bigger is refused.
MAX_BODY_BYTES = 64 * 1024 * 1024
ALLOWED_HEADERS = "content-type,x-namespace"

Transform = Callable[[Sequence[Payload]], Coroutine[Any, Any, list[Payload]]]


def ui_origins(settings: Settings) -> list[str]:
    """LTM_CODEC_CORS_ORIGINS, else the embedded Temporal UI under the names it answers to."""
    listed = [o.strip().rstrip("/") for o in settings.codec_cors_origins.split(",") if o.strip()]
    if listed:
        return listed
    host, _ = settings.temporal_host_port
    port = settings.temporal_ui_port
    return list(dict.fromkeys([f"http://{host}:{port}", f"http://127.0.0.1:{port}",
                               f"http://localhost:{port}"]))  # fmt: skip


def host_names(host: str, port: int, extra: Sequence[str] = ()) -> set[str]:
    """The ``Host`` headers the server answers: its loopback names and the address it listens
    on (and any names it is told), each with its port, lower case."""
    names = {"127.0.0.1", "localhost", "[::1]", host, *extra}
    return {f"{name.lower()}:{port}" for name in names}


def body_length(raw: str | None) -> int | None:
    """The Content-Length as a number of bytes; None when it is missing or no such number."""
    if raw is None or not (raw.isascii() and raw.isdigit()):
        return None
    return int(raw)


def _handler(
    codec: EncryptionCodec, origins: set[str], hosts: set[str]
) -> type[BaseHTTPRequestHandler]:
    routes: dict[str, Transform] = {"/encode": codec.encode, "/decode": codec.decode}

    class CodecHandler(BaseHTTPRequestHandler):
        server_version = "ltm-codec"

        def _cors(self) -> None:
            origin = self.headers.get("Origin")
            if origin in origins:
                self.send_header("Access-Control-Allow-Origin", origin)
                self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
                self.send_header("Access-Control-Allow-Headers", ALLOWED_HEADERS)
                self.send_header("Vary", "Origin")

        def _reply(self, status: HTTPStatus, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self._cors()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _foreign_host(self) -> bool:
            """Refuse (403) a request addressed to a name that is not this server's."""
            if (self.headers.get("Host") or "").strip().lower() in hosts:
                return False
            self._reply(HTTPStatus.FORBIDDEN, '{"error": "unknown Host"}')
            return True

        def do_OPTIONS(self) -> None:
            if self._foreign_host():
                return
            self.send_response(
                HTTPStatus.NO_CONTENT if self.path in routes else HTTPStatus.NOT_FOUND
            )
            self._cors()
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            if self._foreign_host():
                return
            transform = routes.get(self.path)
            if transform is None:
                self._reply(HTTPStatus.NOT_FOUND, '{"error": "POST /encode or /decode"}')
                return
            length = body_length(self.headers.get("Content-Length"))
            if length is None or not 0 < length <= MAX_BODY_BYTES:
                self._reply(HTTPStatus.BAD_REQUEST, '{"error": "a JSON body is required"}')
                return
            try:
                payloads = json_format.Parse(self.rfile.read(length), Payloads())
                result = asyncio.run(transform(payloads.payloads))
            except (json_format.ParseError, PayloadKeyError, PayloadDecryptionError) as error:
                self._reply(HTTPStatus.BAD_REQUEST, json.dumps({"error": str(error)}))
                return
            self._reply(HTTPStatus.OK, json_format.MessageToJson(Payloads(payloads=result)))

    return CodecHandler


def make_server(
    codec: EncryptionCodec,
    host: str,
    port: int,
    origins: Sequence[str],
    extra_hosts: Sequence[str] = (),
) -> ThreadingHTTPServer:
    hosts = host_names(host, port, extra_hosts)
    return ThreadingHTTPServer((host, port), _handler(codec, set(origins), hosts))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m longtask.tooling.codec_server", description=__doc__
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, help="port (default LTM_CODEC_SERVER_PORT, 8081)")
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another name clients reach it by (Host header), besides 127.0.0.1, localhost "
        "and --host; repeatable",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        codec = codec_from_keys(settings.payload_keys, settings.payload_key_file)
    except (SettingsError, PayloadKeyError) as error:
        print(f"codec server: {error}", file=sys.stderr)
        return 2
    port = args.port or settings.codec_server_port
    origins = ui_origins(settings)
    with make_server(codec, args.host, port, origins, args.allow_host) as server:
        print(
            f"codec server on http://{args.host}:{port} (encrypting with key id "
            f"{codec.current_key_id!r}; browsers allowed from {', '.join(origins)})",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    return 0


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
