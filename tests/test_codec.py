"""Payload encryption: the codec, key rotation, the settings, a real task and the codec server."""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis
from temporalio.api.common.v1 import Payload, Payloads, SearchAttributes
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.worker import Replayer

from activities.provider import make_client
from longtask.codec import (
    ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    PayloadDecryptionError,
    PayloadKeyError,
    codec_from_keys,
    parse_keys,
    payload_codec,
)
from longtask.connections import connect_temporal
from longtask.models import DocumentReport
from longtask.payload_store import data_converter
from longtask.settings import Settings, SettingsError, load_settings
from longtask.states import TaskState
from longtask.tooling.codec_server import ui_origins
from longtask.tooling.servers import LlmServer, free_port, wait_for_port
from longtask.tooling.stack import services
from tests.conftest import EXAMPLES, ROOT
from tests.tasks import start
from worker import build_worker
from workflows.document_task import DocumentTaskWorkflow

M = TypeVar("M", bound=Message)


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def codec(keys: str) -> EncryptionCodec:
    return codec_from_keys(SecretStr(keys), None)


async def test_every_kind_of_payload_round_trips_encrypted_also_in_the_payload_store(
    tmp_path: Path,
) -> None:
    store = tmp_path / "payloads"
    converter = data_converter(store, 1024, codec(f"k1:{new_key()}"))
    report = DocumentReport(name="secret-plan.pdf", state=TaskState.COMPLETED, report="merger")
    large = "confidential page text " * 500  # about 11 KB: over the threshold, to the store
    values = [report, large, "short secret", b"secret bytes", None, 42, {"secret": [1.5]}]

    payloads = await converter.encode(values)

    stored = [p for p in payloads if p.external_payloads]
    assert len(stored) == 1, "the large payload leaves the history"
    for payload in payloads:
        if payload in stored:
            continue
        assert payload.metadata["encoding"] == ENCODING
        assert payload.metadata[KEY_ID_METADATA] == b"k1"
        assert b"secret" not in payload.data
    files = [f for f in store.rglob("*") if f.is_file()]
    assert len(files) == 1
    at_rest = files[0].read_bytes()
    assert b"confidential" not in at_rest and ENCODING in at_rest  # the ciphertext was stored
    assert b"confidential" not in stored[0].SerializeToString()
    types: list[type] = [DocumentReport, str, str, bytes, type(None), int, dict]
    assert await converter.decode(payloads, types) == values


async def test_payloads_of_an_old_key_decode_while_it_is_listed() -> None:
    old, new = new_key(), new_key()
    sealed = await codec(f"old:{old}").encode([Payload(data=b"report text")])

    rotated = codec(f"new:{new},old:{old}")
    assert await rotated.decode(sealed) == [Payload(data=b"report text")]
    assert (await rotated.encode([Payload(data=b"x")]))[0].metadata[KEY_ID_METADATA] == b"new"

    with pytest.raises(PayloadKeyError, match="key id 'old'") as raised:
        await codec(f"new:{new}").decode(sealed)
    assert old not in str(raised.value) and new not in str(raised.value)


async def test_tampered_or_relabelled_ciphertext_fails() -> None:
    one, two = new_key(), new_key()
    keys = codec(f"one:{one},two:{two}")
    [sealed] = await keys.encode([Payload(data=b"report text")])

    tampered = Payload()
    tampered.CopyFrom(sealed)
    tampered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(PayloadDecryptionError, match="key id 'one'"):
        await keys.decode([tampered])

    relabelled = Payload()
    relabelled.CopyFrom(sealed)
    relabelled.metadata[KEY_ID_METADATA] = b"two"
    with pytest.raises(PayloadDecryptionError):
        await keys.decode([relabelled])
    # Payloads written before encryption was on pass through untouched.
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"old"')
    assert await keys.decode([plain]) == [plain]


def test_bad_keys_are_named_never_shown() -> None:
    short = base64.b64encode(b"0123456789abcdefghij").decode()  # 20 bytes
    with pytest.raises(PayloadKeyError, match="key 'k1' is 20 bytes") as raised:
        parse_keys(f"k1:{short}", "LTM_PAYLOAD_KEYS")
    assert short not in str(raised.value)
    with pytest.raises(PayloadKeyError, match="'k2' is not valid base64"):
        parse_keys("k2:not*base64", "LTM_PAYLOAD_KEYS")
    with pytest.raises(PayloadKeyError, match="keyid:base64key"):
        parse_keys(new_key(), "LTM_PAYLOAD_KEYS")
    for size in (16, 24, 32):
        key = base64.b64encode(os.urandom(size)).decode()
        assert parse_keys(f" a : {key} ,", "x") == [("a", base64.b64decode(key))]


def test_settings_fail_by_name_without_keys_or_with_bad_ones(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LTM_ENCRYPT_PAYLOADS", "true")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "LTM_ENCRYPT_PAYLOADS" in message
    assert "LTM_PAYLOAD_KEYS" in message and "LTM_PAYLOAD_KEY_FILE" in message

    short = base64.b64encode(os.urandom(20)).decode()
    monkeypatch.setenv("LTM_PAYLOAD_KEYS", f"k1:{short}")
    with pytest.raises(SettingsError, match="LTM_PAYLOAD_KEYS: key 'k1' is 20 bytes") as raised:
        load_settings()
    assert short not in str(raised.value)

    # A key file: one key per line, comments allowed; its first key encrypts.
    monkeypatch.delenv("LTM_PAYLOAD_KEYS")
    key_file = tmp_path / "keys"
    key_file.write_text(f"# newest first\nfile-new:{new_key()}\nfile-old:{new_key()}\n")
    monkeypatch.setenv("LTM_PAYLOAD_KEY_FILE", str(key_file))
    settings = load_settings()
    built = payload_codec(settings)
    assert built is not None and built.current_key_id == "file-new"
    missing = tmp_path / "absent"
    with pytest.raises(ValidationError, match="LTM_PAYLOAD_KEY_FILE: cannot read"):
        Settings(encrypt_payloads=True, payload_key_file=missing)
    assert payload_codec(Settings(encrypt_payloads=False, payload_key_file=missing)) is None


def test_make_up_starts_the_codec_server_only_with_encryption_on() -> None:
    plain = services(Settings())
    assert "codec" not in [s.name for s in plain]
    assert "--ui-codec-endpoint" not in plain[0].command
    port = free_port()
    encrypted = Settings(
        encrypt_payloads=True, payload_keys=SecretStr(f"k:{new_key()}"), codec_server_port=port
    )
    specs = {s.name: s for s in services(encrypted)}
    temporal = specs["temporal"].command
    endpoint = temporal[temporal.index("--ui-codec-endpoint") + 1]
    assert endpoint == f"http://127.0.0.1:{port}"
    assert specs["codec"].command[-3:] == ["longtask.tooling.codec_server", "--port", str(port)]
    assert (specs["codec"].host, specs["codec"].port) == ("127.0.0.1", port)


def messages_in(message: Message, kind: type[M]) -> Iterator[M]:
    """Every ``kind`` inside ``message``, except search attributes (indexed, so never encoded)."""
    if isinstance(message, kind):
        yield message
    if isinstance(message, Payload | SearchAttributes):
        return
    for field, value in message.ListFields():
        entry = field.message_type
        if field.type != FieldDescriptor.TYPE_MESSAGE or entry is None:
            continue
        if entry.GetOptions().map_entry:
            entry_value = entry.fields_by_name["value"]
            items = list(value.values()) if entry_value.type == FieldDescriptor.TYPE_MESSAGE else []
        elif field.is_repeated:
            items = list(value)
        else:
            items = [value]
        for item in items:
            yield from messages_in(item, kind)


def without_sdk_markers(event: HistoryEvent) -> HistoryEvent:
    """The event less the SDK's own bookkeeping in markers (patch ids, local activity seq
    numbers), which Temporal never passes through a codec; a marker's result stays."""
    if not event.HasField("marker_recorded_event_attributes"):
        return event
    kept = HistoryEvent()
    kept.CopyFrom(event)
    details = kept.marker_recorded_event_attributes.details
    for key in ("patch-data", "data"):
        if key in details:
            del details[key]
    return kept


async def test_a_task_runs_encrypted_and_its_history_holds_no_plaintext(
    client: Client, settings: Settings, llm: LlmServer, redis: Redis
) -> None:
    encrypted = settings.model_copy(
        update={"encrypt_payloads": True, "payload_keys": SecretStr(f"run:{new_key()}")}
    )
    sealed_client = await connect_temporal(encrypted)
    # A retried step puts a failure (naming its document) into the history too.
    llm.add({"type": "fail", "status": 503, "times": 1, "match": {"model": "gemini-2.5-flash"}})
    llm_client = make_client(encrypted.llm_base_url, encrypted.llm_api_key.get_secret_value())
    async with build_worker(sealed_client, encrypted, llm_client, redis):
        task, handle = await start(sealed_client, encrypted, [EXAMPLES])
        result = await handle.result()
    await llm_client.close()
    assert result.state is TaskState.COMPLETED
    assert all(d.report for d in result.documents)

    # Fetched by a client without the codec: what the server (and its database) holds.
    history = await client.get_workflow_handle(task.task_id).fetch_history()
    raw = b"".join(event.SerializeToString() for event in history.events)
    secrets = [d.name.encode() for d in result.documents]
    secrets += [d.report[:60].encode() for d in result.documents]
    secrets += [b"Payment gateway outage", str(EXAMPLES).encode()]
    payloads = [p for e in history.events for p in messages_in(without_sdk_markers(e), Payload)]
    assert len(payloads) > 10
    for payload in payloads:
        assert payload.metadata["encoding"] == ENCODING, payload.metadata
        assert payload.metadata[KEY_ID_METADATA] == b"run"
    failures = [f for e in history.events for f in messages_in(e, Failure)]
    assert failures, "the retried step left no failure in the history"
    # The server keeps a retried attempt's last failure within a few kilobytes: a larger one
    # (a batch's details, sealed) it replaces with its own fixed text, the sealed one as cause.
    for failure in failures:
        if failure.HasField("server_failure_info"):
            assert failure.message == "Failure exceeds size limit."
            assert failure.cause.message == "Encoded failure"
        else:
            assert failure.message == "Encoded failure", failure.message
    # The names and texts are in the payloads, encrypted: the search below can find them.
    sealed = payload_codec(encrypted)
    assert sealed is not None
    opened = b"".join(p.SerializeToString() for p in await sealed.decode(payloads))
    for secret in secrets[:-2]:
        assert secret in opened, secret
    for secret in secrets:
        assert secret not in raw, secret

    # An encrypted history replays with the codec.
    replayer = Replayer(
        workflows=[DocumentTaskWorkflow], data_converter=sealed_client.data_converter
    )
    assert (await replayer.replay_workflow(history)).replay_failure is None


def post(
    url: str, body: bytes | None, origin: str, method: str = "POST"
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        url, data=body, method=method,
        headers={"Content-Type": "application/json", "Origin": origin, "X-Namespace": "default"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


UI_ORIGIN = "http://ui.example:8080"


@pytest.fixture
def codec_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`python -m longtask.tooling.codec_server` on a free port: its URL and its (only) key."""
    key = new_key()
    port = free_port()
    env = {
        **os.environ,
        "LTM_PAYLOAD_KEYS": f"srv:{key}",
        "LTM_CODEC_SERVER_PORT": str(port),
        "LTM_CODEC_CORS_ORIGINS": f"{UI_ORIGIN}, http://127.0.0.1:8233",
    }
    log = tmp_path / "codec.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "longtask.tooling.codec_server"], cwd=ROOT, env=env, stdout=sink,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_port(port, server)
        yield f"http://127.0.0.1:{port}", key
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert key not in log.read_text()


async def test_the_codec_server_decodes_for_the_ui(codec_server: tuple[str, str]) -> None:
    url, key = codec_server
    ui = UI_ORIGIN
    original = Payload(metadata={"encoding": b"json/plain"}, data=b'"the report"')
    [sealed] = await codec(f"srv:{key}").encode([original])
    body = json_format.MessageToJson(Payloads(payloads=[sealed])).encode()
    wire = json.loads(body)["payloads"][0]
    assert set(wire) == {"metadata", "data"}
    assert base64.b64decode(wire["metadata"]["encoding"]) == ENCODING

    status, headers, answer = post(f"{url}/decode", body, ui)
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == ui
    decoded = json_format.Parse(answer, Payloads())
    assert list(decoded.payloads) == [original]
    assert base64.b64decode(json.loads(answer)["payloads"][0]["data"]) == b'"the report"'

    plain = json_format.MessageToJson(Payloads(payloads=[original])).encode()
    status, _, answer = post(f"{url}/encode", plain, ui)
    [encoded] = json_format.Parse(answer, Payloads()).payloads
    assert status == 200 and encoded.metadata[KEY_ID_METADATA] == b"srv"
    assert await codec(f"srv:{key}").decode([encoded]) == [original]

    # The browser's preflight: allowed for the UI's origins only.
    status, headers, _ = post(f"{url}/decode", None, ui, "OPTIONS")
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == ui
    assert "x-namespace" in headers["Access-Control-Allow-Headers"]
    assert "POST" in headers["Access-Control-Allow-Methods"]
    _, headers, _ = post(f"{url}/decode", None, "http://elsewhere.example", "OPTIONS")
    assert "Access-Control-Allow-Origin" not in headers

    # A payload of a key the server does not hold: a clear error naming the key id.
    [foreign] = await codec(f"gone:{new_key()}").encode([original])
    body = json_format.MessageToJson(Payloads(payloads=[foreign])).encode()
    status, _, answer = post(f"{url}/decode", body, ui)
    assert status == 400 and "key id 'gone'" in json.loads(answer)["error"]


def test_codec_server_origins_default_to_the_embedded_ui() -> None:
    origins = ui_origins(Settings(temporal_ui_port=9233))
    assert origins == ["http://127.0.0.1:9233", "http://localhost:9233"]
    assert ui_origins(Settings(codec_cors_origins="https://a.example/, https://b.example")) == [
        "https://a.example",
        "https://b.example",
    ]


def test_codec_server_without_keys_exits_naming_the_variables() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LTM_PAYLOAD_KEY")}
    done = subprocess.run(
        [sys.executable, "-m", "longtask.tooling.codec_server", "--port", str(free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "LTM_PAYLOAD_KEYS" in done.stderr and "LTM_PAYLOAD_KEY_FILE" in done.stderr


def raw_request(url: str, method: str, headers: dict[str, str], body: bytes = b"") -> int:
    """A request with exactly these headers (Host and Content-Length included), as a hostile
    page or client could send it; the status answered."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.putrequest(method, "/decode", skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        return connection.getresponse().status
    finally:
        connection.close()


def test_the_codec_server_answers_only_to_its_own_host_names(
    codec_server: tuple[str, str],
) -> None:
    """A page on another site that points its own name at 127.0.0.1 (DNS rebinding) sends its
    own name as Host: refused, whatever the body."""
    url, _ = codec_server
    port = urllib.parse.urlsplit(url).port
    body = json_format.MessageToJson(Payloads()).encode()
    length = str(len(body))
    for host in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1.nip.io:{port}"):
        for method in ("POST", "OPTIONS"):
            headers = {"Host": host, "Content-Length": length, "Origin": UI_ORIGIN}
            assert raw_request(url, method, headers, body) == 403, (host, method)
    assert raw_request(url, "POST", {"Content-Length": length}, body) == 403  # no Host at all
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        assert raw_request(url, "POST", {"Host": host, "Content-Length": length}, body) == 200


def test_the_codec_server_answers_a_bad_content_length_with_400(
    codec_server: tuple[str, str],
) -> None:
    url, _ = codec_server
    host = urllib.parse.urlsplit(url).netloc
    for length in ("abc", "-5", "1e3", "", " 12x"):
        headers = {"Host": host, "Content-Length": length}
        assert raw_request(url, "POST", headers) == 400, length
    # Still serving after all of them.
    body = json_format.MessageToJson(Payloads()).encode()
    assert raw_request(url, "POST", {"Host": host, "Content-Length": str(len(body))}, body) == 200
