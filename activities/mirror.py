"""Writes checkpoints to the Redis mirror: atomic and never moving ``latest`` backwards."""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.metrics import record_checkpoint_lag
from longtask.checkpoint_reader import load_checkpoint
from longtask.checkpoints import (
    CHECKPOINT_LIST_LENGTH,
    CHECKPOINT_TTL_SECONDS,
    PROGRESS_TTL_SECONDS,
    Checkpoint,
    DocumentVariables,
    MirrorWrite,
    checkpoint_id_for,
    checkpoint_key,
    checkpoint_list_key,
    epoch_ms_of,
    latest_key,
    progress_key,
)
from longtask.cost import CostLedger
from longtask.engine.names import CHECKPOINT_NOT_FOUND, LOAD_RESUME_STATE, WRITE_CHECKPOINT
from longtask.models import ResumeRequest, ResumeState, step_key

# One script, so a reader never sees `latest` naming a checkpoint not yet written, and a slow
# or retried writer holding an older checkpoint changes nothing. `latest` expires with the
# checkpoint it names, so it never points at an expired one. It answers 1 when it wrote, 2 when
# this very checkpoint is already the latest (a second writer of it), 0 when refused.
_WRITE_CHECKPOINT = """
local latest = redis.call('GET', KEYS[2])
if latest == ARGV[1] then
  return 2
end
if latest then
  local stamp = tonumber(string.match(latest, '_(%d+)$'))
  if stamp and stamp >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[5])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[5])
redis.call('LPUSH', KEYS[3], ARGV[1])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
redis.call('SET', KEYS[4], ARGV[4], 'EX', ARGV[6])
return 1
"""


# A final checkpoint refused because of a newer id takes the next id this many times at most.
FINAL_RESTAMP_TRIES = 3

# What stands in for error text when LTM_MIRROR_MESSAGES is false: the checkpoint still shows
# that it was taken because of an error (and `variables.state` which one).
WITHHELD = "withheld (LTM_MIRROR_MESSAGES=false)"


def without_text(write: MirrorWrite) -> MirrorWrite:
    """The write with conversation, streamed, step-output and error text left out.

    Ids, document names and paths, steps, progress, tokens and cost stay. A resumed run then
    finds no step outputs to skip and no partial answer to continue: it makes those calls
    again (docs/privacy.md).
    """
    checkpoint = write.checkpoint
    state = checkpoint.state
    variables = dict(state.variables)
    if isinstance(variables.get("failed"), dict):
        variables["failed"] = dict.fromkeys(variables["failed"], WITHHELD)
    metadata = checkpoint.metadata
    if checkpoint.partial_response is not None:
        metadata = metadata.model_copy(update={"partial_chars": len(checkpoint.partial_response)})
    quiet_state = state.model_copy(
        update={
            "messages": [{k: v for k, v in m.items() if k != "content"} for m in state.messages],
            "variables": variables,
            "step_results": [r.model_copy(update={"outputs": None}) for r in state.step_results],
        }
    )
    quiet = checkpoint.model_copy(
        update={
            "state": quiet_state,
            "metadata": metadata,
            "partial_response": None,
            "error": None if checkpoint.error is None else WITHHELD,
        }
    )
    return write.model_copy(update={"checkpoint": quiet})


@dataclass(frozen=True)
class SerializedWrite:
    """A mirror write as the strings Redis stores: immutable, so any thread may hold it."""

    task_id: str
    checkpoint_id: str
    checkpoint_json: str
    snapshot_json: str
    # The task's clock when it took the checkpoint, for the mirror-lag metric.
    taken_at: float
    final: bool = False


def serialize(write: MirrorWrite, mirror_messages: bool = True) -> SerializedWrite:
    """The write as stored; ``mirror_messages`` False leaves the text out (``without_text``)."""
    if not mirror_messages:
        write = without_text(write)
    return SerializedWrite(
        task_id=write.checkpoint.task_id,
        checkpoint_id=write.checkpoint.id,
        checkpoint_json=write.checkpoint.to_json(),
        snapshot_json=write.snapshot.model_dump_json(),
        taken_at=write.snapshot.timestamp,
        final=write.final,
    )


def script_arguments(write: SerializedWrite) -> tuple[str, ...]:
    """The keys and arguments of ``_WRITE_CHECKPOINT`` for one write, after its key count."""
    return (
        checkpoint_key(write.checkpoint_id),
        latest_key(write.task_id),
        checkpoint_list_key(write.task_id),
        progress_key(write.task_id),
        write.checkpoint_id,
        str(epoch_ms_of(write.checkpoint_id)),
        write.checkpoint_json,
        write.snapshot_json,
        str(CHECKPOINT_TTL_SECONDS),
        str(PROGRESS_TTL_SECONDS),
        str(CHECKPOINT_LIST_LENGTH),
    )


async def store(redis: Redis, write: SerializedWrite) -> bool:
    """Store one checkpoint and its progress snapshot; False when a newer one is already there."""
    return bool(await redis.eval(_WRITE_CHECKPOINT, 4, *script_arguments(write)))


def store_all(redis: SyncRedis, writes: list[SerializedWrite]) -> list[bool | Exception]:
    """Store several checkpoints in one round trip, from a thread with its own connection.

    Each answer says whether that write stored (False: a newer one is already there) or how it
    failed; a connection error raises.
    """
    pipe = redis.pipeline(transaction=False)
    for write in writes:
        pipe.eval(_WRITE_CHECKPOINT, 4, *script_arguments(write))
    answers = pipe.execute(raise_on_error=False)
    return [a if isinstance(a, Exception) else bool(a) for a in answers]


async def write_checkpoint_to(
    redis: Redis, write: MirrorWrite, mirror_messages: bool = True
) -> bool:
    """Store one checkpoint and the progress snapshot; False when a newer one is already there.

    ``mirror_messages`` False (the worker's LTM_MIRROR_MESSAGES) leaves the text out
    (``without_text``).
    """
    return await store(redis, serialize(write, mirror_messages))


def resume_state_of(checkpoint: Checkpoint) -> ResumeState:
    """The finished steps and the cut stream a checkpoint records, ready to skip or continue."""
    state = ResumeState()
    for result in checkpoint.state.step_results:
        if result.path is not None and result.outputs is not None:
            state.results[step_key(result.path, result.step)] = list(result.outputs)
    metadata = checkpoint.metadata
    state.usage = metadata.usage
    state.ledger = CostLedger.from_rows(metadata.ledger)
    state.elapsed_seconds = metadata.elapsed_seconds or 0.0
    variables = DocumentVariables.model_validate(checkpoint.state.variables)
    state.finished = variables.finished or ""
    state.documents_digest = variables.documents_digest or ""
    partial_for = metadata.partial_for
    if checkpoint.partial_response and partial_for is not None and partial_for.path:
        key = step_key(partial_for.path, partial_for.step)
        state.partials[key] = checkpoint.partial_response
    return state


class MirrorActivities:
    def __init__(self, redis: Redis, mirror_messages: bool = True) -> None:
        self._redis = redis
        self._mirror_messages = mirror_messages

    @activity.defn(name=WRITE_CHECKPOINT)
    async def write_checkpoint(self, write: MirrorWrite) -> bool:
        """Mirror one checkpoint; a final one is never refused.

        A final checkpoint (the task ended) that finds a newer id in Redis, as a partial answer
        written just before may hold, takes the next id after it: the ended state must be what
        a reader sees last. Redis errors raise, so Temporal retries the activity.
        """
        written = await write_checkpoint_to(self._redis, write, self._mirror_messages)
        for _ in range(FINAL_RESTAMP_TRIES):
            if written or not write.final:
                break
            latest = await self._redis.get(latest_key(write.checkpoint.task_id))
            if latest is not None:
                task_id = write.checkpoint.task_id
                restamped = checkpoint_id_for(task_id, epoch_ms_of(str(latest)) + 1)
                checkpoint = write.checkpoint.model_copy(update={"id": restamped})
                write = write.model_copy(update={"checkpoint": checkpoint})
            written = await write_checkpoint_to(self._redis, write, self._mirror_messages)
        # The snapshot's time is the task's clock when it took the checkpoint.
        record_checkpoint_lag(time.time() - write.snapshot.timestamp)
        return written

    @activity.defn(name=LOAD_RESUME_STATE)
    async def load_resume_state(self, request: ResumeRequest) -> ResumeState:
        """What the checkpoint a new run starts from says is done."""
        checkpoint = await load_checkpoint(self._redis, request.task_id, request.checkpoint_id)
        if checkpoint is None:
            raise ApplicationError(
                f"checkpoint {request.checkpoint_id} of task {request.task_id} is not in Redis "
                "(expired, or Redis lost it); resume from another with --checkpoint",
                type=CHECKPOINT_NOT_FOUND,
                non_retryable=True,
            )
        return resume_state_of(checkpoint)
