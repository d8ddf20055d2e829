"""Continuing a streamed answer cut by a crash or a provider fault, instead of paying for it
again: the retry sends the conversation plus the text so far and asks for the rest."""

from __future__ import annotations

from activities.prompts import Messages

CONTINUE_PROMPT = (
    "Your previous answer was cut off. Continue it exactly where it stopped, without repeating "
    "anything already written and without any preamble."
)
# A shorter partial answer is asked for again whole: continuing it would save almost nothing
# and still cost its text again as input.
MIN_CONTINUE_CHARS = 400
# Shorter overlaps than this are taken as coincidence, not as a repeated seam.
MIN_OVERLAP = 8
MAX_OVERLAP = 2000


def worth_continuing(partial: str) -> bool:
    return len(partial) >= MIN_CONTINUE_CHARS


def continuation_messages(messages: Messages, partial: str) -> Messages:
    return [
        *messages,
        {"role": "assistant", "content": partial},
        {"role": "user", "content": CONTINUE_PROMPT},
    ]


def join_continuation(prefix: str, continuation: str) -> str:
    """The whole answer from the saved text and what the model sent after it.

    Models do not always obey: one restarts from the beginning, another repeats the last few
    words before going on. Either way the joined answer has nothing lost and nothing twice.
    """
    if not prefix:
        return continuation
    if continuation.startswith(prefix):
        return continuation
    if prefix.startswith(continuation):
        # A restart from the beginning, cut before it passed the saved text: nothing new yet.
        # (Joined as new text, it would be saved and continued from: the answer doubled.)
        return prefix
    longest = min(len(prefix), len(continuation), MAX_OVERLAP)
    for size in range(longest, MIN_OVERLAP - 1, -1):
        if prefix.endswith(continuation[:size]):
            return prefix + continuation[size:]
    if len(continuation) >= MIN_OVERLAP and continuation in prefix[-MAX_OVERLAP:]:
        # A repeat of the last words, cut before it reached the end of the saved text.
        return prefix
    return prefix + continuation


def estimate_tokens(text: str) -> int:
    """About four characters a token: what the saved text would have cost to generate again."""
    return len(text) // 4


def estimate_prompt_tokens(messages: object) -> int:
    """What a provider bills for a chat request's messages when no usage came back (a stream
    cut before its end): about four characters a token, counted message by message."""
    if not isinstance(messages, list):
        return 0
    total = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content) // 4
    return total
