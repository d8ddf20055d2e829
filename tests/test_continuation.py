"""Joining a saved partial answer with its continuation: nothing lost, nothing twice."""

from __future__ import annotations

from activities.continuation import (
    CONTINUE_PROMPT,
    continuation_messages,
    join_continuation,
    worth_continuing,
)

ANSWER = "The first finding is cost. The second finding is time. The third finding is risk."


def test_a_clean_continuation_is_appended() -> None:
    cut = 30
    assert join_continuation(ANSWER[:cut], ANSWER[cut:]) == ANSWER


def test_a_repeated_seam_is_not_doubled() -> None:
    cut = 40
    assert join_continuation(ANSWER[:cut], ANSWER[cut - 15 :]) == ANSWER


def test_a_model_that_starts_over_is_not_doubled() -> None:
    assert join_continuation(ANSWER[:25], ANSWER) == ANSWER


def test_a_tiny_coincidental_overlap_is_kept() -> None:
    assert join_continuation("ends with a", "a new sentence") == "ends with aa new sentence"


def test_nothing_saved_means_the_answer_as_sent() -> None:
    assert join_continuation("", ANSWER) == ANSWER


def test_the_retry_sends_the_conversation_plus_the_text_so_far() -> None:
    asked = continuation_messages([{"role": "user", "content": "Write the report."}], "So far")
    assert asked[-2] == {"role": "assistant", "content": "So far"}
    assert asked[-1] == {"role": "user", "content": CONTINUE_PROMPT}


def test_only_a_partial_worth_it_is_continued() -> None:
    assert not worth_continuing("A few words")
    assert worth_continuing("word " * 100)


def test_a_restart_cut_before_it_passes_the_saved_text_adds_nothing() -> None:
    saved = ANSWER[:40]
    cut_restart = ANSWER[:13]
    assert join_continuation(saved, cut_restart) == saved
    # The next attempt continues from the saved text alone: the answer is not doubled.
    assert join_continuation(join_continuation(saved, cut_restart), ANSWER) == ANSWER


def test_a_repeat_of_the_last_words_cut_midway_adds_nothing() -> None:
    saved = ANSWER[:60]
    assert join_continuation(saved, saved[-30:-12]) == saved
    assert join_continuation(saved, saved[-30:] + ANSWER[60:]) == ANSWER
