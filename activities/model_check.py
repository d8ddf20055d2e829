"""Checking a task's models once, before any document's first paid call.

An unknown model (404) or a refused key (401/403) fails every document alike, and would be
found only at the step that uses that model, after the earlier steps of every document were
paid for. One tiny call per model (an embedding of one word; a chat answer of one token) finds
it first, and the task fails at once with the same advice as a step would give. Any other
trouble (5xx, 429, a timeout, a 400 about the tiny call itself) is left to the steps, whose
retries are made for it: the check never fails a task the steps could have run.
"""

from __future__ import annotations

import asyncio

import openai
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import advice_for, kind_of, provider_message
from longtask.engine.names import CHECK_MODELS
from longtask.models import ModelCheckResult, ModelRoute
from longtask.policies import ErrorKind, StepKind
from longtask.tracing import traced_provider_call

CHECK_STEP = "check"
# Generous: the check waits for a loaded provider rather than skip a model for being slow.
CHECK_SECONDS = 60.0
# Statuses that say the model or the key is wrong, whatever is asked: the check's own
# request shape cannot cause them.
DECISIVE_STATUSES = frozenset({401, 403, 404})


class ModelChecker:
    def __init__(self, llm: openai.AsyncOpenAI, api_key: str) -> None:
        self._llm = llm
        self._api_key = api_key

    async def _call(self, model: str, step: StepKind) -> tuple[int, int]:
        """One tiny call of the kind ``step`` makes; its prompt and completion tokens."""
        if step is StepKind.EMBED:
            return await _embed_one_word(self._llm, model)
        return await _chat_one_token(self._llm, model)

    async def _check(
        self, model: str, step: StepKind, result: ModelCheckResult
    ) -> tuple[str, ErrorKind] | None:
        """Why ``model`` cannot serve ``step`` (and the error kind), or None."""
        try:
            async with asyncio.timeout(CHECK_SECONDS):
                prompt, completion = await self._call(model, step)
        except openai.APIStatusError as error:
            if error.status_code not in DECISIVE_STATUSES:
                activity.logger.warning("model %s not checked: %s", model, error.status_code)
                return None
            kind = kind_of(error)
            said = provider_message(error, self._api_key)
            advice = advice_for(error, model, step)
            return f"model check of {model}: {kind.value}: {said}; {advice}", kind
        except (openai.APIError, TimeoutError) as error:
            activity.logger.warning("model %s not checked: %s", model, type(error).__name__)
            return None
        result.usage.add(model, prompt, completion)
        result.ledger.record(CHECK_STEP, model, 1, "success", prompt, completion)
        return None

    @activity.defn(name=CHECK_MODELS)
    async def check_models(self, route: ModelRoute) -> ModelCheckResult:
        """Check each model of the route once (a model serving several chat steps once);
        fail non-retryably, with what to fix, if one is unknown or the key is refused."""
        asked: dict[tuple[str, bool], StepKind] = {}
        for step in StepKind:
            model = route.for_step(step)
            asked.setdefault((model, step is StepKind.EMBED), step)
        result = ModelCheckResult()
        found = await asyncio.gather(
            *(self._check(model, step, result) for (model, _), step in asked.items())
        )
        problems = [problem for problem in found if problem is not None]
        if problems:
            message = "; ".join(text for text, _ in problems)
            kind = problems[0][1]
            raise ApplicationError(
                message, result.model_dump(), type=kind.value, non_retryable=True
            )
        return result


# Provider calls like the steps' own, so a trace shows them as `llm.embed` and `llm.chat` spans.
@traced_provider_call("embed")
async def _embed_one_word(llm: openai.AsyncOpenAI, model: str) -> tuple[int, int]:
    embedded = await llm.embeddings.create(model=model, input=["ok"], timeout=CHECK_SECONDS)
    return (embedded.usage.prompt_tokens if embedded.usage else 0), 0


@traced_provider_call("chat")
async def _chat_one_token(llm: openai.AsyncOpenAI, model: str) -> tuple[int, int]:
    answered = await llm.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Reply with OK."}],
        max_tokens=1,
        timeout=CHECK_SECONDS,
    )
    usage = answered.usage
    return (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
