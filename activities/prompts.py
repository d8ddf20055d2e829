"""The messages the document agent sends for each step."""

from __future__ import annotations

from openai.types.chat import ChatCompletionMessageParam

Messages = list[ChatCompletionMessageParam]


def summarize_page(document: str, page: int, text: str) -> Messages:
    return [
        {
            "role": "system",
            "content": "You summarize one page of a document in three sentences, keeping "
            "names, figures and dates exactly as written.",
        },
        {"role": "user", "content": f"Document {document}, page {page + 1}:\n\n{text}"},
    ]


def reason(document: str, summaries: list[str], passages: list[str]) -> Messages:
    pages = "\n".join(f"Page {i + 1}: {s}" for i, s in enumerate(summaries))
    quoted = "\n---\n".join(passages)
    return [
        {
            "role": "system",
            "content": "You analyse a whole document from its page summaries and key "
            "passages: main argument, evidence, contradictions between pages, risks.",
        },
        {
            "role": "user",
            "content": f"Document {document}.\n\nPage summaries:\n{pages}\n\n"
            f"Key passages:\n{quoted}",
        },
    ]


def report(document: str, summaries: list[str], analysis: str) -> Messages:
    pages = "\n".join(f"Page {i + 1}: {s}" for i, s in enumerate(summaries))
    return [
        {
            "role": "system",
            "content": "You write the final report on a document for a busy reader: a "
            "one-paragraph summary, then findings, then recommended actions.",
        },
        {
            "role": "user",
            "content": f"Document {document}.\n\nAnalysis:\n{analysis}\n\nPage summaries:\n{pages}",
        },
    ]
