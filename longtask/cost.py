"""Token usage and its price per model."""

from __future__ import annotations

from pydantic import BaseModel, Field

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
