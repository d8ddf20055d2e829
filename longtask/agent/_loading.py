"""Long tasks a worker loads by module path (LTM_TASK_MODULES=examples.translate,...)."""

from __future__ import annotations

import importlib
import inspect

from longtask.agent._task import LongTask


def module_names(setting: str) -> list[str]:
    """Module paths from a comma-separated setting, blanks left out."""
    return [name.strip() for name in setting.split(",") if name.strip()]


def load_task_modules(names: list[str]) -> list[type]:
    """Import each module (registering its tools) and return its long-task workflows.

    A module that does not import fails the worker at start-up, naming the module.
    """
    found: list[type] = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise RuntimeError(f"LTM_TASK_MODULES: cannot import {name!r}: {error}") from error
        for _, member in inspect.getmembers(module, inspect.isclass):
            is_task = issubclass(member, LongTask) and member is not LongTask
            defined = hasattr(member, "__temporal_workflow_definition")
            if is_task and defined and member not in found:
                found.append(member)
    return found
