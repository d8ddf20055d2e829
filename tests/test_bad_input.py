"""Bad input answered clearly: each message names the input and what to do, nothing else is lost.

A bad document fails alone (its message is ``"<path>: <what is wrong>; <what to do>"``) while
the task's other documents complete; an invalid setting stops the starter and the worker by
the variable's name; an unknown model and a refused key fail with the option or setting to fix.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.documents import LEAVE_OUT, MAX_DOCUMENT_PAGES, read_pages
from longtask.models import ModelRoute, TaskResult
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.text import chunks_of, embed_batches
from longtask.tooling.servers import LlmServer
from tests.conftest import EXAMPLES, ROOT, TEST_API_KEY
from tests.tasks import read_json, read_text, start
from tests.test_cli import run_starter

# As root a mode-000 file is still readable: the worker then runs without the two
# capabilities that let root read any file, so permission is really denied, as for a user.
DROP_READ_ANYTHING = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]


@pytest.fixture
def worker_process(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python worker.py` configured by environment, as an ordinary user would run it."""
    env = {
        **os.environ,
        "LTM_TEMPORAL_ADDRESS": settings.temporal_address,
        "LTM_TASK_QUEUE": settings.task_queue,
        "LTM_REDIS_URL": settings.redis_url,
        "LTM_LLM_BASE_URL": settings.llm_base_url,
        "LTM_METRICS_PORT": "0",
        "LTM_PAYLOAD_DIR": str(settings.payload_folder),
        "LTM_PAYLOAD_THRESHOLD_BYTES": str(settings.payload_threshold_bytes),
        "LTM_REPORT_DIR": str(tmp_path / "reports"),
    }
    prefix: list[str] = []
    if os.geteuid() == 0:
        assert shutil.which("setpriv"), "running as root: setpriv is needed to drop privileges"
        prefix = DROP_READ_ANYTHING
    with (tmp_path / "worker.log").open("ab") as log:
        process = subprocess.Popen(
            [*prefix, sys.executable, str(ROOT / "worker.py")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    yield process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


async def failed_result(handle: WorkflowHandle[Any, TaskResult]) -> TaskResult:
    """The result a failed task carries in its error."""
    with pytest.raises(WorkflowFailureError) as raised:
        await handle.result()
    cause = raised.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "TASK_FAILED", cause
    return TaskResult.model_validate(cause.details[0])


def write_bad_documents(folder: Path) -> dict[str, tuple[Path, str]]:
    """One document of each kind of bad input, with the message each must get."""
    folder.mkdir()
    binary = folder / "photo.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    nul = folder / "nul.md"
    nul.write_bytes(b"\x00" * 64 + b"text after zeros")
    corrupt = folder / "scan.pdf"
    corrupt.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF garbage")
    empty = folder / "empty.md"
    empty.write_text("  \n\n \n")
    locked = folder / "locked.txt"
    locked.write_text("a private page")
    locked.chmod(0)
    too_long = folder / "too-long.txt"
    too_long.write_text("\f".join(f"page {p}" for p in range(MAX_DOCUMENT_PAGES + 1)))
    leave_out = "or leave it out of the task"
    return {
        "photo.txt": (binary, f"not UTF-8 text (binary, or another encoding); convert it to "
                      f"UTF-8 text, {leave_out}"),
        "nul.md": (nul, f"binary data, not text; convert it to UTF-8 text, {leave_out}"),
        "scan.pdf": (corrupt, f"); export it again or convert it to .txt, {leave_out}"),
        "empty.md": (empty, f"no text found in the document; add text, {leave_out}"),
        "locked.txt": (locked, "permission denied; let the worker's user read it (e.g. chmod "
                       f"a+r), {leave_out}"),
        "too-long.txt": (too_long, f"{MAX_DOCUMENT_PAGES + 1:,} pages, more than the "
                         f"{MAX_DOCUMENT_PAGES:,} a document may have (the reasoning step reads "
                         "every page's summary at once); split it into smaller files"),
    }  # fmt: skip


def write_big_document(path: Path, mib: int) -> Path:
    """Plain text of ``mib`` MiB, paragraphs of varied words: far past the 2 MiB payload limit."""
    paragraph = 0
    with path.open("w") as out:
        while out.tell() < mib * 1024 * 1024:
            words = " ".join(f"item{paragraph}-{w} rose {w % 17} percent" for w in range(18))
            out.write(f"Paragraph {paragraph}. {words}.\n\n")
            paragraph += 1
    return path


async def test_each_bad_document_fails_alone_and_the_others_complete(
    client: Client,
    settings: Settings,
    llm: LlmServer,
    worker_process: subprocess.Popen[bytes],
    tmp_path: Path,
) -> None:
    bad = write_bad_documents(tmp_path / "inbox")
    good = [EXAMPLES / "incident-postmortem.txt", EXAMPLES / "heat-pump-field-study.pdf"]
    missing = tmp_path / "missing.txt"
    other_type = tmp_path / "notes.docx"
    other_type.write_text("a word document")

    _task, handle = await start(client, settings, [good[0], missing, tmp_path / "inbox",
                                                   other_type, good[1]])  # fmt: skip
    result = await failed_result(handle)

    expected = {
        **bad,
        missing.name: (missing, "no such file or folder; check the path (the worker reads it"),
        other_type.name: (
            other_type,
            "unsupported file type; convert it to .txt, .md or .pdf, or leave it out",
        ),
    }
    by_name = {document.name: document for document in result.documents}
    assert sorted(by_name) == sorted([*expected, *(path.name for path in good)])
    for name, (path, message) in expected.items():
        document = by_name[name]
        assert document.state is TaskState.FAILED, name
        # "<path>: <what is wrong>; <what to do>"
        assert document.error.startswith(f"{path}: "), document.error
        assert message in document.error, document.error
    assert "scan.pdf: not a readable PDF (PdfReadError: " in by_name["scan.pdf"].error
    assert result.reason == f"{len(expected)} of {len(by_name)} documents failed"

    # The good documents completed with their reports, and no call was made for a bad one.
    for path in good:
        assert by_name[path.name].state is TaskState.COMPLETED
        assert by_name[path.name].report
    pages = [read_pages(path) for path in good]
    assert llm.count("/chat/completions") == sum(len(p) + 2 for p in pages)
    assert llm.count("/embeddings") == sum(embed_batches(len(chunks_of(p))) for p in pages)


async def test_a_document_past_the_payload_limit_is_processed(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, tmp_path: Path
) -> None:
    # Documents travel by path and big results through the payload store: a 3 MiB text
    # (some 1,200 pages) is summarized page by page like any other.
    big = write_big_document(tmp_path / "big.txt", 3)
    assert big.stat().st_size > 2 * 1024 * 1024
    pages = read_pages(big)
    assert 1_000 < len(pages) <= MAX_DOCUMENT_PAGES
    # The machine is shared: a busy event loop (every heartbeat carries the ~1,400 results
    # so far) must not pass for a dead worker.
    _task, handle = await start(client, settings, [big], heartbeat_timeout_seconds=10)
    result = await handle.result()
    assert result.state is TaskState.COMPLETED
    assert result.documents[0].report
    assert llm.count("/chat/completions") == len(pages) + 2
    assert llm.count("/embeddings") == embed_batches(len(chunks_of(pages)))


async def test_no_usable_document_fails_the_task_at_once_with_every_reason(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, redis: Redis,
    tmp_path: Path,
) -> None:  # fmt: skip
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    missing = tmp_path / "gone.md"
    task, handle = await start(client, settings, [empty, missing])
    result = await failed_result(handle)
    assert result.reason.startswith("no usable document:\n")
    assert f"{empty}: no text found in the document; add text" in result.reason
    assert f"{missing}: no such file or folder; check the path" in result.reason
    assert llm.count("/chat/completions") == 0
    # An outside reader sees it ended, and why.
    latest = await read_text(redis, f"task:{task.task_id}:latest")
    checkpoint = await read_json(redis, f"checkpoint:{latest}")
    assert checkpoint["state"]["variables"]["state"] == "failed"
    assert checkpoint["error"] == result.reason


async def test_thousands_of_empty_files_keep_every_reason_within_temporals_limits(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, tmp_path: Path
) -> None:
    """25,000 reasons would make a 3 MB failure, past what Temporal carries: the task fails
    with counts by kind and the first reasons, and the whole list is in a file."""
    folder = tmp_path / "empty"
    folder.mkdir()
    for n in range(25_000):
        (folder / f"note-{n:05d}.txt").touch()
    (folder / "binary.txt").write_bytes(b"\x00\x01 not text")
    task, handle = await start(client, settings, [folder])
    result = await failed_result(handle)
    reason = result.reason
    assert len(reason.encode()) < 16 * 1024
    assert reason.startswith("no usable document: 25,001 documents, none usable:")
    assert "  25,000 x no text found in the document\n" in reason
    assert "  1 x binary data, not text\n" in reason
    assert f"{folder / 'binary.txt'}: binary data" in reason  # sorted first, shown in full
    listed = settings.report_folder() / task.task_id / "unusable-documents.txt"
    assert f"every reason is in {listed}" in reason
    lines = listed.read_text().splitlines()
    assert len(lines) == 25_001
    assert (
        f"{folder / 'note-24999.txt'}: no text found in the document; add text, {LEAVE_OUT}"
        in lines
    )
    assert llm.count("/chat/completions") == 0


async def test_an_unknown_model_names_the_option_to_fix(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    # The local LLM server answers any model; a real provider answers 404, as here.
    llm.add(
        {"type": "fail", "status": 404, "code": "model_not_found", "times": None,
         "message": "The model `no-such-model` does not exist or you do not have access to it.",
         "match": {"model": "no-such-model"}}
    )  # fmt: skip
    models = ModelRoute(
        embedding=settings.model_embedding,
        intermediate=settings.model_intermediate,
        reasoning=settings.model_reasoning,
        final="no-such-model",
    )
    _task, handle = await start(client, settings, [EXAMPLES], models=models)
    result = await failed_result(handle)
    assert len(result.documents) == 3
    for document in result.documents:
        assert document.state is TaskState.FAILED
        assert document.error.startswith(f"report step of {document.name}: INVALID_REQUEST: ")
        assert document.error.endswith(
            "; model no-such-model (or the endpoint) not found at the provider: check the "
            "model name (--model-final or LTM_MODEL_FINAL) and LTM_LLM_BASE_URL"
        ), document.error
    # Not retried: one report call per document, and every earlier step went through.
    assert llm.count("/chat/completions", "no-such-model") == 3
    assert llm.count("/chat/completions", settings.model_reasoning) == 3


async def test_a_refused_key_stops_the_task_saying_which_setting_to_check(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add({"type": "fail", "status": 401, "times": None})
    _task, handle = await start(client, settings, [EXAMPLES / "incident-postmortem.txt"])
    result = await failed_result(handle)
    advice = "the provider refused the API key (for model "
    assert result.reason.startswith("stopped at the first AUTH_FAILED: ")
    assert "check LTM_LLM_API_KEY on the workers, and LTM_LLM_BASE_URL" in result.reason
    assert advice in result.documents[0].error
    assert TEST_API_KEY not in result.reason


@pytest.mark.parametrize("program", ["starter.py", "worker.py"])
def test_an_invalid_setting_stops_the_process_naming_the_variable(program: str) -> None:
    env = {**os.environ, "LTM_DOCUMENT_CONCURRENCY": "abc"}
    args = ["start", str(EXAMPLES)] if program == "starter.py" else []
    ended = subprocess.run(
        [sys.executable, str(ROOT / program), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ended.returncode == 2
    assert "invalid setting" in ended.stderr
    assert "LTM_DOCUMENT_CONCURRENCY: Input should be a valid integer" in ended.stderr


def test_the_starter_warns_of_a_missing_path_and_refuses_when_none_exists(
    tmp_path: Path,
) -> None:
    # No server listens on this address: the warning comes before any connection.
    settings = Settings(temporal_address="127.0.0.1:1")
    missing = tmp_path / "missing.txt"
    warned = run_starter(settings, "start", str(EXAMPLES), str(missing))
    assert f"starter.py: warning: {missing}: no such file or folder here; check the path" in (
        warned.stderr
    )
    assert warned.returncode == 1  # it went on to connect, and found no server
    refused = run_starter(settings, "start", str(missing))
    assert refused.returncode == 2
    assert f"{missing}: no such file or folder; check the path" in refused.stderr
