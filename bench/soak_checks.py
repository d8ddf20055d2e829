"""What the soak checks once its job ends: each check names what it found wrong, if anything.

Every check reads an outside source of truth: the documents on disk, the report files, the
LLM server's own request log and verdict, the workers' logs, Temporal's histories replayed
with the current workflow code, and the Redis mirror.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llmock.routers._chat import prompt_of
from llmock.simulation import MockResponseSettings, build_mock_text, estimate_tokens
from llmock.streaming import text_pieces
from pydantic import BaseModel
from redis.asyncio import Redis
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from activities.continuation import CONTINUE_PROMPT
from bench.server_bill import prompt_tokens_of
from longtask.checkpoint_reader import load_checkpoint
from longtask.checkpoints import ProgressSnapshot, progress_key
from longtask.models import TaskResult
from longtask.settings import Settings
from longtask.states import TaskState
from workflows.document_task import DocumentTaskWorkflow

# How Temporal names a history that the workflow code no longer produces.
NONDETERMINISM = re.compile(r"Nondeterminism|TMPRL1100")
# A stream opens with a role chunk before its first piece of text.
_LEADING_CHUNKS = 1
# llmock keeps the last 10,000 requests: a longer log would make the bill incomplete.
SERVER_LOG_CAPACITY = 10_000
# A report that begins again after this many characters was written twice.
_SEAM_CHARS = 60


class Check(BaseModel):
    name: str
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems


class Tokens(BaseModel):
    """Requests and tokens, as the LLM server billed them or as the task's ledger booked them."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def first_few(items: Iterable[str], limit: int = 5) -> list[str]:
    listed = list(items)
    return listed[:limit] + ([f"... and {len(listed) - limit} more"] if len(listed) > limit else [])


def reports_once(result: TaskResult, corpus: list[Path], report_folder: Path) -> Check:
    """Every document of the corpus in the result exactly once, completed, its report on disk;
    no report file that no document names."""
    problems = []
    names = Counter(report.name for report in result.documents)
    expected = {path.name for path in corpus}
    problems += [f"{name}: reported {n} times" for name, n in names.items() if n > 1]
    problems += [f"{name}: not reported" for name in sorted(expected - set(names))]
    problems += [f"{name}: not in the corpus" for name in sorted(set(names) - expected)]
    problems += [
        f"{r.name}: {r.state.value} {r.error}".strip()
        for r in result.documents
        if r.state is not TaskState.COMPLETED
    ]
    files = {r.report_file for r in result.documents}
    problems += [f"{r.name}: no report file" for r in result.documents if not r.report_file]
    problems += [
        f"{f}: missing on disk" for f in sorted(files) if f and not (report_folder / f).is_file()
    ]
    task_folder = report_folder / result.task_id
    on_disk = {f"{result.task_id}/{p.name}" for p in task_folder.glob("*.md")}
    problems += [f"{f}: a report file no document names" for f in sorted(on_disk - files)]
    return Check(name="every document reported exactly once", problems=first_few(problems))


def continued_partials(records: list[dict[str, Any]], model: str) -> list[str]:
    """The saved text of every continued stream of ``model``: a continuation request carries
    it as the assistant's message just before the product's continue prompt."""
    partials = []
    for record in records:
        body = record.get("body")
        if not isinstance(body, dict) or body.get("model") != model:
            continue
        messages = body.get("messages") or []
        if len(messages) >= 2 and messages[-1].get("content") == CONTINUE_PROMPT:
            partials.append(str(messages[-2].get("content", "")))
    return partials


def no_text_twice(reports: dict[str, str], partials: list[str], scripted: str) -> Check:
    """Each report is the scripted answer exactly: a continued stream added nothing twice
    and lost nothing. Also each saved text of a continued report stream is in its report."""
    problems = [
        f"{name}: {len(text)} characters, not the {len(scripted)} of the answer"
        + (" (written twice)" if text.count(scripted[:_SEAM_CHARS]) > 1 else "")
        for name, text in reports.items()
        if text != scripted
    ]
    problems += [
        f"a continued stream's saved text ({len(p)} characters) is not how the answer begins"
        for p in set(partials)
        if not scripted.startswith(p)
    ]
    return Check(name="no report text doubled or lost", problems=first_few(problems))


def answer_text(body: dict[str, Any], scripted_model: str, scripted: str) -> str:
    """The whole answer the server streams for a chat request: the scripted text for
    ``scripted_model``, its mock text (a pure function of model and prompt) for the others."""
    if body.get("model") == scripted_model:
        return scripted
    prompt, _ = prompt_of(body.get("messages") or [])
    return build_mock_text(settings=MockResponseSettings(), model=body["model"], prompt=prompt)


def _completion_sent(record: dict[str, Any], scripted_model: str, scripted: str) -> int:
    """Completion tokens of what the server sent for one request, as it counts them."""
    body = record.get("body") or {}
    if not record["path"].endswith("/chat/completions") or not isinstance(body, dict):
        return 0
    if record["status"] != 200:
        return 0
    text = answer_text(body, scripted_model, scripted)
    if not record.get("stream"):
        return max(1, estimate_tokens(text))
    pieces = text_pieces(text)
    sent = max(0, min(len(pieces), record.get("chunks_sent", 0) - _LEADING_CHUNKS))
    if sent == len(pieces) and record.get("completed"):
        return max(1, estimate_tokens(text))
    return estimate_tokens("".join(pieces[:sent]))


def _whole_before_cut(record: dict[str, Any], scripted_model: str, scripted: str) -> bool:
    """Whether a truncated stream had sent its whole text and its finish reason (the role
    chunk, every piece, then the finish chunk) before the cut: only the usage chunk and the
    terminator were missing, and the answer is whole."""
    body = record.get("body")
    if not isinstance(body, dict):
        return False
    pieces = text_pieces(answer_text(body, scripted_model, scripted))
    return int(record.get("chunks_sent", 0)) >= _LEADING_CHUNKS + len(pieces) + 1


def server_bill_by_model(
    records: list[dict[str, Any]], scripted_model: str, scripted: str
) -> dict[str, Tokens]:
    """The LLM server's bill per model, from its request log; ``scripted_model`` answered
    ``scripted`` to every request (the soak's scenario), the others their mock text."""
    bills: dict[str, Tokens] = {}
    for record in records:
        body = record.get("body")
        model = body.get("model", "?") if isinstance(body, dict) else "?"
        entry = bills.setdefault(model, Tokens())
        entry.requests += 1
        # A refused request (429, 5xx) is not billed; a stream that began is, prompt and all.
        if record["status"] < 400:
            entry.prompt_tokens += prompt_tokens_of(record)
        entry.completion_tokens += _completion_sent(record, scripted_model, scripted)
    return bills


# A worker books a call's tokens with its next heartbeat (an eighth of the heartbeat timeout):
# an answer that ended this shortly before a SIGKILL may have died with its worker unbooked.
KILL_GRACE_SECONDS = 1.0


def in_flight_at_a_kill(record: dict[str, Any], kill_times: list[float]) -> bool:
    """Whether a request was still with its worker when one was killed: the answer (or its
    cut) reached a worker that died before it could book it."""
    started, ended = record.get("started_at"), record.get("ended_at")
    if not isinstance(started, int | float) or not isinstance(ended, int | float):
        return False
    return any(started <= kill <= ended + KILL_GRACE_SECONDS for kill in kill_times)


# A stream the server cut may count as sent one piece the client never received (a piece is
# a word or two: at most this many tokens).
PIECE_IN_TRANSIT_TOKENS = 4


def streams_cut_by_faults(records: list[dict[str, Any]]) -> Counter[str]:
    """Per model, the streams the server began and then cut on purpose (a fault)."""
    cut: Counter[str] = Counter()
    for record in records:
        body = record.get("body")
        if record["status"] == 200 and record.get("fault") and isinstance(body, dict):
            cut[str(body.get("model", "?"))] += 1
    return cut


def ledger_matches_bill(
    booked: dict[str, Tokens],
    billed: dict[str, Tokens],
    lost_to_kills: dict[str, Tokens],
    cut_streams: Counter[str],
) -> Check:
    """The ledger books what the provider billed: never more, and less only by calls that
    were in flight in a worker when it was SIGKILLed (the worker died with what it knew) and,
    for a stream the server cut, by the piece still on its way when it cut."""
    problems = []
    for model in sorted(set(booked) | set(billed)):
        have, bill = booked.get(model, Tokens()), billed.get(model, Tokens())
        lost = lost_to_kills.get(model, Tokens()).model_copy()
        lost.completion_tokens += cut_streams[model] * PIECE_IN_TRANSIT_TOKENS
        fields = ("requests", "prompt_tokens", "completion_tokens")
        over = [f for f in fields if getattr(have, f) > getattr(bill, f)]
        short = [f for f in fields if getattr(have, f) < getattr(bill, f) - getattr(lost, f)]
        if over or short:
            problems.append(
                f"{model}: ledger {have.model_dump()}, server {bill.model_dump()}, "
                f"in flight at kills {lost.model_dump()}"
            )
    return Check(name="ledger matches the LLM server's bill", problems=problems)


def total_of(entries: Iterable[Tokens]) -> Tokens:
    total = Tokens()
    for entry in entries:
        total.requests += entry.requests
        total.prompt_tokens += entry.prompt_tokens
        total.completion_tokens += entry.completion_tokens
    return total


def log_complete(records: list[dict[str, Any]]) -> Check:
    full = len(records) >= SERVER_LOG_CAPACITY
    return Check(
        name="the LLM server's log holds every request",
        problems=[f"{len(records)} requests: the oldest may have been dropped"] if full else [],
    )


async def server_verdict(settings: Settings) -> dict[str, Any]:
    """The LLM server's verdict on every client that called it (``/_llmock/verdict``)."""
    host, port = settings.llm_host_port
    url = f"http://{host}:{port}/_llmock/verdict"

    def fetch() -> dict[str, Any]:
        with urllib.request.urlopen(url, timeout=60) as answer:
            verdict: dict[str, Any] = json.loads(answer.read())
        return verdict

    return await asyncio.to_thread(fetch)


def ledger_by_model(result: TaskResult) -> dict[str, Tokens]:
    booked: dict[str, Tokens] = {}
    for row in result.ledger.rows():
        entry = booked.setdefault(row.model, Tokens())
        entry.requests += row.calls
        entry.prompt_tokens += row.prompt_tokens
        entry.completion_tokens += row.completion_tokens
    return booked


def _conversation(messages: list[Any]) -> list[Any]:
    """The conversation of a chat request, without a continuation's saved text and prompt."""
    if messages[-1:] == [{"role": "user", "content": CONTINUE_PROMPT}]:
        return messages[:-2]
    return messages


def _continued(record: dict[str, Any], records: list[dict[str, Any]]) -> bool:
    """Whether a later request continued this cut stream from saved text (its body is then
    different, so the server's verdict cannot see it as a retry)."""
    body = record.get("body")
    if not isinstance(body, dict) or not body.get("messages"):
        return False
    asked = _conversation(body["messages"])
    for later in records:
        other = later.get("body")
        if later["seq"] <= record["seq"] or not isinstance(other, dict):
            continue
        messages = other.get("messages") or []
        if (
            other.get("model") == body.get("model")
            and messages[-1:] == [{"role": "user", "content": CONTINUE_PROMPT}]
            and _conversation(messages) == asked
        ):
            return True
    return False


def _retried(record: dict[str, Any], records: list[dict[str, Any]]) -> bool:
    """Whether a later request carried the same body: the client did retry it."""
    return any(
        later["seq"] > record["seq"] and later["fingerprint"] == record["fingerprint"]
        for later in records
    )


def cut_by_kill(record: dict[str, Any]) -> bool:
    """A stream the client hung up on with no fault of the server's: the product cuts a
    stream only on a stall (a server fault) or a cancel, so its worker was killed."""
    return record["status"] == 200 and not record["completed"] and not record.get("fault")


def _explained(
    finding: dict[str, Any], records: list[dict[str, Any]], scripted_model: str, scripted: str
) -> bool:
    """Whether a finding is the verdict misreading what the client did.

    - a cut stream continued from its saved text has a new body, so the verdict sees the
      call as given up (``gave_up``, ``truncated_stream_accepted``,
      ``malformed_chunk_ignored``);
    - a stream with a malformed chunk arrives whole, so the verdict does not count it as
      failed and takes its retry, same body, for a new call (``malformed_chunk_ignored``);
    - the attempt after a worker kill comes at the recovery time, not at a backoff, which
      the verdict reads as retries without backoff (``no_backoff``);
    - a stream truncated after its finish reason was sent is a whole answer, rightly kept
      (``truncated_stream_accepted``).
    """
    by_seq = {record["seq"]: record for record in records}
    picked = [by_seq[s] for s in finding.get("requests", []) if s in by_seq]
    code = finding["code"]
    if code in {"gave_up", "truncated_stream_accepted", "malformed_chunk_ignored"} and any(
        _continued(record, records) for record in picked
    ):
        return True
    if code == "malformed_chunk_ignored":
        return bool(picked) and all(_retried(record, records) for record in picked)
    if code == "no_backoff":
        return any(cut_by_kill(record) for record in picked)
    if code == "truncated_stream_accepted":
        return bool(picked) and all(
            _whole_before_cut(record, scripted_model, scripted) for record in picked
        )
    return False


def verdict_clean(
    verdict: dict[str, Any], records: list[dict[str, Any]], scripted_model: str, scripted: str
) -> tuple[Check, int]:
    """No finding in the LLM server's verdict but those the soak itself explains (see
    ``_explained``). Returns the check and how many findings were explained."""
    problems = []
    explained = 0
    for finding in verdict.get("findings", []):
        if _explained(finding, records, scripted_model, scripted):
            explained += 1
            continue
        problems.append(f"{finding['severity']} {finding['code']}: {finding.get('title', '')}")
    return Check(name="LLM server verdict clean", problems=first_few(problems)), explained


def nondeterminism_in_logs(logs: list[Path]) -> Check:
    problems = []
    for log in logs:
        text = log.read_text(errors="replace") if log.exists() else ""
        hits = [line for line in text.splitlines() if NONDETERMINISM.search(line)]
        problems += [f"{log.name}: {line[:300]}" for line in hits]
    return Check(name="no nondeterminism in any worker log", problems=first_few(problems, 10))


async def task_histories(client: Client, task_id: str) -> list[WorkflowHistory]:
    """Every run of the task, continue-as-new runs included."""
    histories = []
    async for execution in client.list_workflows(f"WorkflowId = '{task_id}'"):
        handle = client.get_workflow_handle(task_id, run_id=execution.run_id)
        histories.append(await handle.fetch_history())
    return histories


async def histories_replay(client: Client, histories: list[WorkflowHistory]) -> Check:
    """Each run replayed with the current workflow code and the product's data converter."""
    replayer = Replayer(workflows=[DocumentTaskWorkflow], data_converter=client.data_converter)
    problems = []
    for history in histories:
        replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if replayed.replay_failure is not None:
            problems.append(f"run {history.run_id}: {replayed.replay_failure}")
    if not histories:
        problems.append("no history found for the task")
    return Check(name=f"all {len(histories)} runs replay", problems=problems)


async def mirror_matches(redis: Redis, result: TaskResult) -> Check:
    """The newest checkpoint in Redis is the task's end: completed, 100 %, the same cost."""
    problems = []
    checkpoint = await load_checkpoint(redis, result.task_id)
    if checkpoint is None:
        problems.append("no newest checkpoint in Redis")
    else:
        state = checkpoint.state.variables.get("state")
        cost = checkpoint.metadata.cost_so_far
        if state != result.state.value:
            problems.append(f"checkpoint {checkpoint.id}: state {state}, task {result.state}")
        if checkpoint.progress != 100:
            problems.append(f"checkpoint {checkpoint.id}: progress {checkpoint.progress}")
        if cost != result.cost_so_far:
            problems.append(f"checkpoint {checkpoint.id}: cost {cost}, task {result.cost_so_far}")
    raw = await redis.get(progress_key(result.task_id))
    if raw is None:
        problems.append("no progress record in Redis")
    else:
        record = ProgressSnapshot.model_validate_json(raw).status
        if record.progress != 100:
            problems.append(f"progress record says {record.progress} %")
    return Check(name="Redis mirror equals the task's end", problems=problems)
