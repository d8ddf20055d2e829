"""Settings of long tasks, read from the environment like the others (prefix ``LTM_``)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from longtask.settings import ENV_PREFIX


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # Modules of user-written long tasks a worker loads, comma-separated module paths
    # (e.g. "examples.translate"); their tools are registered with them.
    task_modules: str = ""
