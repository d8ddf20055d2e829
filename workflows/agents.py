"""The long-task workflows a worker runs: the built-in research agent and the user's own."""

from __future__ import annotations

from longtask.agent._loading import load_task_modules, module_names
from longtask.agent._settings import AgentSettings
from workflows.research import ResearchTask


def agent_workflows(settings: AgentSettings | None = None) -> list[type]:
    """The research agent, then every long task of LTM_TASK_MODULES."""
    names = module_names((settings or AgentSettings()).task_modules)
    return [ResearchTask, *load_task_modules(names)]
