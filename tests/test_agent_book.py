"""Bookkeeping of long tasks, with no server: progress roll-up, checkpoints in the SPEC's
layout, carry-over to a new run, tools as models see them, and the timeout rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from activities.agent_calls import limits_for
from activities.mirror import serialize
from longtask.agent import (
    LongTaskInput,
    ModelAnswer,
    TaskContext,
    ToolCall,
    tool,
)
from longtask.agent._book import AgentBook, carry_from_checkpoint
from longtask.checkpoints import epoch_ms_of
from longtask.cost import CostLedger, TaskBudget, TokenUsage
from longtask.policies import TaskType, TimeoutPolicy
from longtask.research import sources_in
from longtask.states import TaskState

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def book_for(**fields: object) -> AgentBook:
    return AgentBook(LongTaskInput.model_validate({"task_id": "t-1", **fields}), T0)


def context_of(book: AgentBook) -> TaskContext:
    return TaskContext(book.task, book, lambda: False, lambda: None)


def usage(model: str, prompt: int, completion: int) -> TokenUsage:
    spent = TokenUsage()
    spent.add(model, prompt, completion)
    return spent


def test_nested_progress_rolls_up_with_an_eta() -> None:
    book = book_for()
    progress = context_of(book).progress
    chapters = progress.sub("chapters", total=4)
    pages = progress.sub("appendix").sub("pages", total=6)
    chapters.advance(2)
    pages.advance(3)
    record = book.record(T0 + timedelta(seconds=10))
    assert (record.step, record.total, record.progress) == (5, 10, 50.0)
    assert record.eta_seconds == 10.0  # 5 steps in 10 s, 5 to go
    assert book.node(("appendix",)).steps_total() == 6
    progress.finish()
    assert book.record(T0 + timedelta(seconds=12)).progress == 100.0


def test_a_fresh_task_has_no_eta_and_an_ended_one_none_either() -> None:
    book = book_for()
    context_of(book).progress.total(3)
    assert book.record(T0).eta_seconds is None
    book.go(TaskState.RUNNING, T0, "")
    book.go(TaskState.CANCELLED, T0, "")
    assert book.record(T0 + timedelta(seconds=1)).eta_seconds is None


def test_a_checkpoint_holds_messages_variables_results_and_cost() -> None:
    book = book_for(prices={"m": 1000.0})
    book.messages.append({"role": "user", "content": "hello"})
    book.variables["glossary"] = ["Tern"]
    call = book.next_call()
    ledger = CostLedger()
    ledger.record("turn 1", "m", 1, "success", 10, 5)
    book.book(call, "turn 1", "model", "x" * 5000, usage("m", 10, 5), ledger, "m")
    first = book.checkpoint(T0).checkpoint
    second = book.checkpoint(T0, error="stopped").checkpoint
    assert first.id == f"t-1_{int(T0.timestamp() * 1000)}"
    assert epoch_ms_of(second.id) == epoch_ms_of(first.id) + 1  # unique in one millisecond
    assert first.state.messages == [{"role": "user", "content": "hello"}]
    assert first.state.variables == {"glossary": ["Tern"]}
    [result] = first.state.step_results
    assert (result.call, result.step, result.kind) == (1, "turn 1", "model")
    assert result.outputs is not None
    assert len(result.outputs[0]) == 2000  # the whole text is in the conversation
    assert first.metadata.cost_so_far == 0.015 and first.metadata.tokens == 15
    assert first.metadata.ledger[0].step == "turn 1"
    assert second.error == "stopped" and first.error is None
    # The checkpoint is JSON of the SPEC's layout.
    body = json.loads(first.to_json())
    assert set(body["state"]) == {"messages", "variables", "current_step", "step_results"}


def test_a_new_run_takes_over_everything_the_last_one_carried() -> None:
    book = book_for()
    book.go(TaskState.RUNNING, T0, "started")
    book.messages.append({"role": "user", "content": "q"})
    book.variables["done"] = {"a": "b"}
    context_of(book).progress.total(4).advance(3)
    book.book(book.next_call(), "s", "tool", "out", usage("m", 3, 0), CostLedger())
    last = book.checkpoint(T0 + timedelta(seconds=5)).checkpoint
    task = book.task.model_copy(update={"carried": book.carry()})
    following = AgentBook(task, T0 + timedelta(hours=1))
    assert following.runs == 2 and following.started_at == T0
    assert following.machine.state is TaskState.RUNNING
    assert following.messages == book.messages and following.variables == book.variables
    assert following.next_call() == 2
    assert following.usage.total_tokens == 3
    assert following.record(T0 + timedelta(seconds=6)).step == 3
    assert epoch_ms_of(following.checkpoint(T0).checkpoint.id) > epoch_ms_of(last.id)


def test_a_checkpoint_read_back_carries_the_conversation_and_the_cost() -> None:
    book = book_for(prices={"m": 1000.0})
    book.messages.extend([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    book.variables["corpus"] = {"chunks": 3}
    context_of(book).progress.sub("turns", total=5).advance(2)
    ledger = CostLedger()
    ledger.record("turn 1", "m", 1, "success", 4, 4)
    book.book(book.next_call(), "turn 1", "model", "a", usage("m", 4, 4), ledger, "m")
    checkpoint = book.checkpoint(T0).checkpoint
    carried = carry_from_checkpoint(checkpoint)
    assert carried.messages == book.messages and carried.variables == book.variables
    assert carried.usage.total_tokens == 8 and carried.ledger.calls() == 1
    assert carried.calls == 1 and carried.last_checkpoint_ms == epoch_ms_of(checkpoint.id)
    assert carried.progress is not None and carried.progress.steps_done() == 2


def test_the_budget_is_reached_by_what_was_spent() -> None:
    book = book_for(prices={"m": 1000.0}, budget=TaskBudget(max_cost_usd=0.01))
    assert book.budget_reached() is None
    book.book(1, "turn 1", "model", "", usage("m", 10, 0), CostLedger())
    assert "reached the budget" in (book.budget_reached() or "")


class Lookup(BaseModel):
    term: str
    limit: int = 3


def test_a_tool_is_offered_in_openai_format_with_its_own_retry_policy() -> None:
    @tool("lookup_term", timeout=5, max_attempts=2, non_retryable=[KeyError, "Gone"])
    async def lookup(args: Lookup) -> str:
        """Look a term up."""
        return args.term

    definition = lookup.definition()
    assert definition["type"] == "function"
    function = definition["function"]
    assert function["name"] == "lookup_term" and function["description"] == "Look a term up."
    assert function["parameters"]["required"] == ["term"]
    assert lookup.activity_name == "tool.lookup_term" and not lookup.wants_env
    policy = lookup.retry_policy()
    assert policy.maximum_attempts == 2
    assert set(policy.non_retryable_error_types or []) >= {"KeyError", "Gone"}


def test_a_tool_needs_a_model_for_its_arguments() -> None:
    with pytest.raises(TypeError, match="must be a pydantic model"):

        @tool()
        async def loose(term: str) -> str:
            return term


def test_a_task_type_of_ones_own_follows_the_spec_rule() -> None:
    policy = TimeoutPolicy()
    reasoning = [policy.attempt_timeout(TaskType.REASONING, a) for a in range(4)]
    thinking = [limits_for(policy, 2.0, a, "thinking", "m") for a in range(4)]
    assert [limits.total for limits in thinking] == reasoning == [60, 120, 240, 300]
    assert [limits_for(policy, 3.0, a, "slow", "m").total for a in range(4)] == [90, 180, 300, 300]
    # A type of one's own hangs like ``default``: its first chunk may take 30 s on any attempt.
    assert {limits.first_chunk for limits in thinking} == {30.0}


def test_an_answer_with_tool_calls_is_an_assistant_turn_in_openai_shape() -> None:
    answer = ModelAnswer(text="", tool_calls=[ToolCall(id="c1", name="search", arguments="{}")])
    message = answer.as_message()
    assert message["content"] is None
    assert message["tool_calls"][0] == {
        "id": "c1",
        "type": "function",
        "function": {"name": "search", "arguments": "{}"},
    }


def test_sources_are_the_passages_tools_returned_first_seen_first() -> None:
    found = sources_in(
        [
            json.dumps([{"document": "a.md", "page": 2, "text": "alpha"}]),
            "error: no tool",
            json.dumps({"document": "b.txt", "page": 1, "text": "beta"}),
            json.dumps([{"document": "a.md", "page": 2, "text": "alpha again"}]),
        ]
    )
    assert [(s.ref, s.text) for s in found] == [("a.md p.2", "alpha"), ("b.txt p.1", "beta")]


def state_of(book: AgentBook) -> TaskState:
    return book.machine.state


def test_a_call_retrying_moves_the_state_and_a_late_word_does_not() -> None:
    book = book_for()
    book.go(TaskState.RUNNING, T0, "")
    assert not book.call_retrying(7)  # not under way: a late signal changes nothing
    book.in_flight.add(7)
    assert book.call_retrying(7)
    book.follow_retries(T0)
    assert state_of(book) is TaskState.RETRYING
    book.call_ended(7)
    book.follow_retries(T0)
    assert state_of(book) is TaskState.RUNNING
    book.in_flight.add(8)
    book.call_retrying(8)
    book.go(TaskState.PAUSED, T0, "")
    book.follow_retries(T0)
    assert state_of(book) is TaskState.PAUSED  # a pause is left only by resume


def test_without_text_the_mirror_keeps_no_message_or_output_of_a_long_task() -> None:
    book = book_for()
    book.messages.append({"role": "tool", "tool_call_id": "c1", "content": "secret passage"})
    book.book(book.next_call(), "turn 1", "model", "secret answer", TokenUsage(), CostLedger())
    stored = serialize(book.checkpoint(T0), mirror_messages=False).checkpoint_json
    assert "secret" not in stored
    assert '"tool_call_id":"c1"' in stored and '"step":"turn 1"' in stored
