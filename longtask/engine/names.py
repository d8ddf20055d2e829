"""Every name Temporal keeps for this product, in one place: workflows, activities, signals,
updates, queries, error types and patches.

Running tasks and their histories name these: renaming one breaks them (README: stable names).
"""

from __future__ import annotations

from longtask.policies import STOP_TASK_KINDS as STOP_TASK_KINDS
from longtask.policies import StepKind

# Workflows (task kinds). User tasks are named by their own ``@long_task(name=...)``.
DOCUMENT_TASK = "DocumentTask"
RESEARCH_TASK = "ResearchTask"

# Handlers every task answers.
STATUS_QUERY = "status"
PAUSE_UPDATE = "pause"
RESUME_UPDATE = "resume"
# The same asked by signal, answered through a query (longtask/engine/steering.py).
STEER_SIGNAL = "steer"
STEERED_QUERY = "steered"
# Progress of a running batch of the document task, and of one step (tasks begun before
# batches sent one event per signal).
STEPS_PROGRESS_SIGNAL = "steps_progress"
STEP_PROGRESS_SIGNAL = "step_progress"
# A long task's model or embedding call retries after a provider failure (not a lost worker).
CALL_RETRYING_SIGNAL = "call_retrying"
# A running batch of the document task asks its task for the next documents as places free:
# a signal, then a query for the answer (an update, in tasks begun before
# ``PATCH_BATCHES_ASK_BY_SIGNAL``).
TAKE_DOCUMENTS_UPDATE = "take_documents"
ASK_DOCUMENTS_SIGNAL = "ask_documents"
TAKEN_DOCUMENTS_QUERY = "taken_documents"

# Activities of every task.
WRITE_CHECKPOINT = "write_checkpoint"
CHECK_MODELS = "check_models"
# Activities of the document task.
LOAD_DOCUMENTS = "load_documents"
LOAD_RESUME_STATE = "load_resume_state"
PROCESS_DOCUMENTS = "process_documents"
# One activity per step: tasks begun before batches (workflows/document_legacy.py).
ACTIVITY_OF_STEP: dict[StepKind, str] = {
    StepKind.EMBED: "embed_chunks",
    StepKind.SUMMARIZE: "summarize_pages",
    StepKind.REASON: "reason_across_pages",
    StepKind.REPORT: "write_report",
}
KIND_OF_ACTIVITY: dict[str, StepKind] = {name: kind for kind, name in ACTIVITY_OF_STEP.items()}
# Activities of long tasks (longtask.agent): one model call, one embedding call, a batch of
# model calls (``TaskContext.map_calls``), and a user's tool ``tool.NAME``.
CALL_MODEL = "agent.call_model"
EMBED_TEXTS = "agent.embed"
CALL_MODELS = "agent.call_models"
TOOL_ACTIVITY_PREFIX = "tool."

# Error types (``ApplicationError.type``) a task or a client acts on. The provider's error
# kinds (429, 5xx, timeouts, a refused key) are ``longtask.policies.ErrorKind``.
INVALID_TASK_ID = "INVALID_TASK_ID"
BAD_INPUT = "BAD_INPUT"
TASK_FAILED = "TASK_FAILED"
CHECKPOINT_NOT_FOUND = "CHECKPOINT_NOT_FOUND"
WORKER_SHUTDOWN = "WORKER_SHUTDOWN"
# An attempt another worker failed on behalf of its worker, found dead by its closed Redis
# connection (activities/liveness.py): retried at once elsewhere, like a heartbeat timeout.
WORKER_LOST = "WORKER_LOST"
INVALID_TOOL_ARGUMENTS = "INVALID_TOOL_ARGUMENTS"
# STOP_TASK_KINDS (from longtask.policies): a failure that dooms every step alike (a refused
# key); the task stops at the first one.

# Patches (``workflow.patched``): each marks a change of what a workflow does, so runs begun
# before it keep replaying. Never remove one while a run that lacks it may still replay.
PATCH_TASK_ID_CHECKED = "task-id-checked"
PATCH_CHECKPOINT_SINK = "checkpoint-sink"
PATCH_CANCEL_WAITS_FOR_BATCHES = "cancel-waits-for-batches"
PATCH_LOAD_FAILURE_ENDS_TASK = "load-failure-ends-task"
PATCH_DOCUMENT_BATCHES = "document-batches"
PATCH_SEARCH_ATTRIBUTES = "search-attributes"
PATCH_BATCHES_FAIL_BY_CALL_ATTEMPTS = "batches-fail-by-call-attempts"
# The document task's window of documents in flight is refilled as documents end (signalled by
# their batch), not as whole batches end; small tasks fill a batch before they spread.
PATCH_DOCUMENTS_WINDOW = "documents-window"
PATCH_SMALL_TASKS_FILL_BATCHES = "small-tasks-fill-batches"
# A batch takes its next document from its task the moment one of its places frees (an update),
# instead of the task starting a new batch once a signal said a document ended.
PATCH_BATCHES_TAKE_DOCUMENTS = "batches-take-documents"
# A batch asks for documents with a signal and reads the answer with a query, not an update.
# An update's acceptance is a protocol message, not an event: a worker that rebuilds a task
# after a timed-out workflow task can run it in a later activation than the events beside it,
# while a replay runs it before them, so the commands around it come in another order and the
# history stops replaying (recorded: "Update machine does not handle this event"). A signal is
# an event with its own place in the history.
PATCH_BATCHES_ASK_BY_SIGNAL = "batches-ask-by-signal"
# Long tasks: checkpoints on the engine's cadence (each change, 10 steps, 30 s) with search
# attributes, instead of one checkpoint per change and search attributes on transitions only.
PATCH_LONG_TASK_CADENCE = "long-task-cadence"
# ``TaskContext.map`` waits for every item's work before it raises the first error (a cancel
# included), so the calls in flight answer and are booked.
PATCH_MAP_WAITS_FOR_ALL = "map-waits-for-all"
