"""Token usage, its price per model, and the ledger of every provider attempt."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# A price per million tokens: finite and never negative, or a budget would never be reached
# (``inf``/``nan`` make every comparison false; a negative price lowers the cost so far).
Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]

# US dollars per million tokens, as quoted by the article; a model missing here costs 0.
DEFAULT_PRICES_PER_MILLION: dict[str, float] = {
    "deepseek-v3.2": 0.42,
    "gemini-2.5-flash": 2.50,
    "gpt-4.1": 8.00,
}


class TokenUsage(BaseModel):
    """Tokens per model, so a price can be put on them later."""

    prompt_tokens: dict[str, int] = Field(default_factory=dict)
    completion_tokens: dict[str, int] = Field(default_factory=dict)
    # Completion tokens a resumed stream did not pay again (estimated); not part of the cost.
    saved_completion_tokens: dict[str, int] = Field(default_factory=dict)

    def add(self, model: str, prompt: int, completion: int) -> None:
        self.prompt_tokens[model] = self.prompt_tokens.get(model, 0) + prompt
        self.completion_tokens[model] = self.completion_tokens.get(model, 0) + completion

    def add_saved(self, model: str, tokens: int) -> None:
        self.saved_completion_tokens[model] = self.saved_completion_tokens.get(model, 0) + tokens

    def merge(self, other: TokenUsage) -> None:
        for model, tokens in other.prompt_tokens.items():
            self.add(model, tokens, 0)
        for model, tokens in other.completion_tokens.items():
            self.add(model, 0, tokens)
        for model, tokens in other.saved_completion_tokens.items():
            self.add_saved(model, tokens)

    @property
    def total_tokens(self) -> int:
        return sum(self.prompt_tokens.values()) + sum(self.completion_tokens.values())

    def cost(self, prices: dict[str, float] | None = None) -> float:
        """Dollars for these tokens at ``prices`` per million (the article's single price)."""
        table = DEFAULT_PRICES_PER_MILLION if prices is None else prices
        models = set(self.prompt_tokens) | set(self.completion_tokens)
        dollars = sum(
            (self.prompt_tokens.get(m, 0) + self.completion_tokens.get(m, 0))
            * table.get(m, 0.0)
            / 1_000_000
            for m in models
        )
        return float(round(dollars, 6))


# The ledger's step names in the order a task runs them: the model check as it starts, then the
# document agent's steps (longtask.policies.StepKind).
PIPELINE_ORDER = ("check", "embed", "summarize", "reason", "report")


class LedgerEntry(BaseModel):
    """Provider attempts of one step kind on one model, by attempt number and outcome."""

    step: str
    model: str
    attempt: int
    status: str
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Completion tokens a resumed stream did not pay again: shown apart, never in the cost.
    saved_tokens: int = 0

    def cost(self, prices: dict[str, float] | None = None) -> float:
        table = DEFAULT_PRICES_PER_MILLION if prices is None else prices
        tokens = self.prompt_tokens + self.completion_tokens
        return float(round(tokens * table.get(self.model, 0.0) / 1_000_000, 6))


class CostLedger(BaseModel):
    """Every provider attempt, rolled up by (step, model, attempt, status).

    Failed attempts are rows of their own: a stream cut after it started is billed by the
    provider for what it sent, so such a row carries tokens too.
    """

    entries: dict[str, LedgerEntry] = Field(default_factory=dict)

    def record(
        self,
        step: str,
        model: str,
        attempt: int,
        status: str,
        prompt: int = 0,
        completion: int = 0,
        saved: int = 0,
        calls: int = 1,
    ) -> None:
        key = f"{step}|{model}|{attempt}|{status}"
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = LedgerEntry(
                step=step, model=model, attempt=attempt, status=status
            )
        entry.calls += calls
        entry.prompt_tokens += prompt
        entry.completion_tokens += completion
        entry.saved_tokens += saved

    @classmethod
    def from_rows(cls, rows: list[LedgerEntry]) -> CostLedger:
        ledger = cls()
        ledger.merge_rows(rows)
        return ledger

    def merge(self, other: CostLedger) -> None:
        self.merge_rows(list(other.entries.values()))

    def merge_rows(self, rows: list[LedgerEntry]) -> None:
        for entry in rows:
            self.record(
                entry.step,
                entry.model,
                entry.attempt,
                entry.status,
                entry.prompt_tokens,
                entry.completion_tokens,
                entry.saved_tokens,
                entry.calls,
            )

    def rows(self) -> list[LedgerEntry]:
        return sorted(self.entries.values(), key=lambda e: (e.step, e.model, e.attempt, e.status))

    def pipeline_rows(self) -> list[LedgerEntry]:
        """The rows in the order a document goes through the steps (the model check first),
        then by model, attempt and outcome; a step not named there comes last."""

        def place(entry: LedgerEntry) -> tuple[int, str, str, int, str]:
            order = PIPELINE_ORDER.index(entry.step) if entry.step in PIPELINE_ORDER else 99
            return (order, entry.step, entry.model, entry.attempt, entry.status)

        return sorted(self.entries.values(), key=place)

    def calls(self, status: str | None = None) -> int:
        return sum(e.calls for e in self.entries.values() if status in (None, e.status))


class TaskBudget(BaseModel):
    """Where a task stops: money and/or tokens over all its runs; None means no limit."""

    model_config = ConfigDict(allow_inf_nan=False)

    max_cost_usd: float | None = Field(None, gt=0)
    max_tokens: int | None = Field(None, gt=0)

    def exceeded_by(self, usage: TokenUsage, prices: dict[str, float] | None) -> str | None:
        """Why ``usage`` reached this budget, or None while it has not."""
        cost = usage.cost(prices)
        if self.max_cost_usd is not None and cost >= self.max_cost_usd:
            return f"cost ${cost:.6f} reached the budget of ${self.max_cost_usd:.6f}"
        if self.max_tokens is not None and usage.total_tokens >= self.max_tokens:
            return f"{usage.total_tokens} tokens reached the budget of {self.max_tokens}"
        return None
