"""The built-in research agent: answers a question over a local corpus with tools, then
streams a report that cites the passages the tools returned."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.research_tools import RESEARCH_TOOLS, NoArguments, index_corpus
    from longtask.agent import LongTask, TaskContext, long_task
    from longtask.engine.names import RESEARCH_TASK
    from longtask.research import ResearchInput, ResearchReport, sources_in

SYSTEM_PROMPT = (
    "You are a careful research assistant. Answer the user's question from the documents "
    "only: search them, read the pages that matter, and say when they do not answer it."
)
REPORT_PROMPT = (
    "Write the final report now: answer the question in a few paragraphs, citing each claim "
    "with its source as [document p.N], from the tool results above only."
)


@long_task(name=RESEARCH_TASK)
class ResearchTask(LongTask):
    async def work(self, ctx: TaskContext, request: ResearchInput) -> ResearchReport:
        ctx.tool_context.update(paths=request.paths, search_results=request.search_results)
        steps = ctx.progress.total(request.max_turns + 2)
        if "corpus" not in ctx.variables:
            # Embedded once per task: a resumed or continued run finds it in its variables.
            ctx.variables["corpus"] = await ctx.call_tool(index_corpus, NoArguments())
            ctx.variables["question"] = request.question
            ctx.messages.extend(
                [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": request.question},
                ]
            )
            steps.advance()
        await ctx.run_agent(
            RESEARCH_TOOLS,
            max_turns=request.max_turns,
            on_turn=lambda turn: steps.advance(),
        )
        asked = [*ctx.messages, {"role": "user", "content": REPORT_PROMPT}]
        report = await ctx.call_model(
            asked, task_type="reasoning", model=ctx.model_for("final"), stream=True, step="report"
        )
        ctx.messages.append(report.as_message())
        steps.finish()  # the tool loop may have ended before its last turn
        tool_results = [str(m["content"]) for m in ctx.messages if m.get("role") == "tool"]
        sources = sources_in(tool_results)
        cited = "\n".join(f"- [{s.ref}] {s.text[:300]}" for s in sources)
        text = f"{report.text}\n\n## Sources\n{cited or '- (no tool returned a passage)'}\n"
        turns = sum(1 for m in ctx.messages if m.get("role") == "assistant")
        return ResearchReport(question=request.question, report=text, sources=sources, turns=turns)
