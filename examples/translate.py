"""Your own long task: a folder translated chapter by chapter, with a glossary of the names
met so far carried in ``variables`` so every chapter spells them alike (docs/agents.md)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from longtask.agent import LongTask, LongTaskInput, TaskContext, long_task, tool


class Chapter(BaseModel):
    folder: str
    name: str = ""


@tool(timeout=10, max_attempts=3, non_retryable=[FileNotFoundError])
def list_chapters(args: Chapter) -> list[str]:
    """The chapters (.txt files) of a folder, in order."""
    return sorted(path.name for path in Path(args.folder).glob("*.txt"))


@tool(timeout=10, max_attempts=3, non_retryable=[FileNotFoundError])
def read_chapter(args: Chapter) -> str:
    """One chapter's text."""
    return (Path(args.folder) / args.name).read_text(encoding="utf-8")


class TranslateInput(LongTaskInput):
    folder: str
    language: str = "French"


class Translation(BaseModel):
    chapters: dict[str, str]
    glossary: list[str]


@long_task(name="Translate")
class Translate(LongTask):
    async def work(self, ctx: TaskContext, request: TranslateInput) -> Translation:
        names = await ctx.call_tool(list_chapters, Chapter(folder=request.folder))
        progress = ctx.progress.total(len(names))
        done: dict[str, str] = ctx.variables.setdefault("chapters", {})
        glossary: list[str] = ctx.variables.setdefault("glossary", [])
        for name in names:
            if name in done:  # translated by an earlier run (resume, continue-as-new)
                continue
            await ctx.continue_as_new_if_long()  # a long book goes on in a fresh history
            text = await ctx.call_tool(read_chapter, Chapter(folder=request.folder, name=name))
            keep = ", ".join(glossary) or "none yet"
            system = f"Translate into {request.language}. Keep these names unchanged: {keep}."
            messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
            answer = await ctx.call_model(messages, stream=True, step=f"translate {name}")
            done[name] = answer.text
            names_met = re.findall(r"(?<=[a-z,;] )[A-Z][a-z]+", text)  # capitalized mid-sentence
            glossary.extend(n for n in dict.fromkeys(names_met) if n not in glossary)
            progress.advance()
        return Translation(chapters=done, glossary=glossary)
