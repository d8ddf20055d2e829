"""Each model of a task's route is checked once, before any document's first paid call."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from longtask.models import ModelRoute
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.task_resume import outcome
from longtask.tooling.servers import LlmServer
from tests.conftest import EXAMPLES, TEST_API_KEY
from tests.tasks import start

UNKNOWN = "no-such-model"


def route_with_final(settings: Settings, final: str) -> ModelRoute:
    return ModelRoute(
        embedding=settings.model_embedding,
        intermediate=settings.model_intermediate,
        reasoning=settings.model_reasoning,
        final=final,
    )


async def test_an_unknown_model_fails_the_task_before_any_document_is_paid_for(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add(
        {"type": "fail", "status": 404, "code": "model_not_found", "times": None,
         "message": f"The model `{UNKNOWN}` does not exist or you do not have access to it.",
         "match": {"model": UNKNOWN}}
    )  # fmt: skip
    models = route_with_final(settings, UNKNOWN)
    _, handle = await start(client, settings, [EXAMPLES], models=models, check_models=True)
    result = await outcome(handle)
    assert result is not None and result.state is TaskState.FAILED
    assert result.reason.startswith(f"model check of {UNKNOWN}: INVALID_REQUEST: ")
    assert result.reason.endswith(
        f"; model {UNKNOWN} (or the endpoint) not found at the provider: check the model name "
        "(--model-final or LTM_MODEL_FINAL) and LTM_LLM_BASE_URL"
    ), result.reason
    # One call per model, then nothing: no document's step was paid for.
    assert llm.count("/chat/completions", UNKNOWN) == 1
    assert llm.count("/chat/completions", settings.model_reasoning) == 1
    assert llm.count("/chat/completions", settings.model_intermediate) == 1
    assert llm.count("/embeddings") == 1
    # The checks that were answered are booked like any call.
    checked = {e.model for e in result.ledger.rows() if e.step == "check"}
    assert checked == {settings.model_intermediate, settings.model_reasoning}
    assert result.usage.total_tokens > 0


async def test_the_check_costs_one_call_per_model_not_per_document(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    _, handle = await start(client, settings, [EXAMPLES], check_models=True)
    result = await handle.result()
    assert result.state is TaskState.COMPLETED and len(result.documents) == 3
    assert llm.count("/chat/completions", settings.model_final) == 3 + 1
    assert llm.count("/chat/completions", settings.model_reasoning) == 3 + 1
    rows = [e for e in result.ledger.rows() if e.step == "check"]
    assert sorted((e.model, e.calls) for e in rows) == [
        (settings.model_intermediate, 2),  # once for embeddings, once for chat
        (settings.model_reasoning, 1),
        (settings.model_final, 1),
    ]


async def test_a_refused_key_ends_the_task_at_the_check(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add({"type": "fail", "status": 401, "times": None})
    _, handle = await start(
        client, settings, [EXAMPLES / "incident-postmortem.txt"], check_models=True
    )
    result = await outcome(handle)
    assert result is not None and result.state is TaskState.FAILED
    assert "AUTH_FAILED" in result.reason
    assert "check LTM_LLM_API_KEY on the workers, and LTM_LLM_BASE_URL" in result.reason
    assert TEST_API_KEY not in result.reason
    assert llm.count("/chat/completions") == 3 and llm.count("/embeddings") == 1


async def test_passing_trouble_at_the_check_is_left_to_the_steps(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    """A 503 or a 429 says nothing about the model: the task goes on, and its steps retry."""
    llm.add({"type": "fail", "status": 503, "match": {"model": settings.model_final}})
    llm.add({"type": "fail", "status": 429, "match": {"model": settings.model_reasoning}})
    _, handle = await start(
        client, settings, [EXAMPLES / "incident-postmortem.txt"], check_models=True
    )
    result = await handle.result()
    assert result.state is TaskState.COMPLETED
    assert result.documents[0].report
