"""Settings read from the environment (prefix ``LTM_``); a bad value fails at start-up by name."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as UnparsedSettingError

from longtask.cost import DEFAULT_PRICES_PER_MILLION, Price
from longtask.policies import HangLimits, ModelQuota, TaskType, TimeoutPolicy

ENV_PREFIX = "LTM_"


class SettingsError(Exception):
    """Raised when an environment variable holds a value the product cannot use."""


def _host_port(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} must look like HOST:PORT, got {value!r}")
    return host, int(port)


def redact_url(url: str) -> str:
    """The URL with its password (``redis://:PASSWORD@host``, ``?password=``) masked."""
    parts = urlsplit(url)
    if parts.password is not None:
        user, _, host = parts.netloc.rpartition("@")
        url = url.replace(parts.netloc, f"{user.partition(':')[0]}:***@{host}", 1)
    if "password=" in parts.query:
        items = parts.query.split("&")
        masked = [("password=***" if i.startswith("password=") else i) for i in items]
        url = url.replace(parts.query, "&".join(masked), 1)
    return url


def _read_pem(path: Path) -> bytes:
    """The bytes of a PEM file, or a ValueError naming the file and what is wrong with it."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{path} is not a PEM file (no -----BEGIN line)")
    return data


class Settings(BaseSettings):
    """Everything a worker, the starter or the embedded stack needs; defaults are the local stack.

    The API key is a ``SecretStr`` so it never shows in a repr, a log line or a workflow input:
    workers read it from their own environment and no other process ever needs it.
    """

    # No setting is a number that is not one: inf or nan deadlines, waits or budgets are refused.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", allow_inf_nan=False)

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = Field("default", min_length=1)
    # A remote cluster (docs/deploying.md): TLS, on with any of the settings below; mutual TLS
    # with a client certificate and its key (PEM files, both or neither); a private CA and the
    # name the server's certificate carries; or a Temporal Cloud API key (a secret, like the LLM
    # key). Files are read at start-up, so a wrong path fails there, by name.
    temporal_tls: bool = False
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    temporal_tls_ca: Path | None = None
    temporal_tls_server_name: str | None = None
    temporal_api_key: SecretStr | None = None
    # The CA that signed a rediss:// server's certificate, when it is not a public one. A Redis
    # password goes in the URL (redis://:PASSWORD@host:6379/0) and is masked wherever shown.
    redis_tls_ca: Path | None = None
    temporal_ui_port: int = Field(8233, ge=1, le=65535)
    task_queue: str = Field("long-tasks", min_length=1)
    redis_url: str = "redis://127.0.0.1:6379/0"
    llm_base_url: str = "http://127.0.0.1:8000/v1"
    # The local LLM server accepts any key; a real provider's key comes from the environment only.
    llm_api_key: SecretStr = SecretStr("local-llm-server-needs-no-key")

    model_embedding: str = Field("deepseek-v3.2", min_length=1)
    model_intermediate: str = Field("deepseek-v3.2", min_length=1)
    model_reasoning: str = Field("gemini-2.5-flash", min_length=1)
    model_final: str = Field("gpt-4.1", min_length=1)

    # Detects a dead worker or a stuck event loop; recovery after SIGKILL takes about this long
    # plus the retry wait. Shorter means faster recovery and more heartbeat traffic.
    heartbeat_timeout_seconds: float = Field(2.0, gt=0.1, le=120)
    # Workers watch each other through Redis: a worker killed outright closes its connection at
    # once, and another worker fails its steps' attempts for a retry elsewhere, long before the
    # heartbeat timeout (activities/liveness.py). Off: the heartbeat timeout alone.
    detect_dead_workers: bool = True
    # A worker runs its workflows on a thread with an event loop of their own, so its LLM
    # streams never hold a task's workflow tasks back (longtask/workflow_thread.py).
    workflow_thread: bool = True
    # What this worker process runs: everything, or its workflows or its activities alone. A
    # deployment may run them in separate processes: workflows then never share an
    # interpreter with the LLM streams (checkpoints reach Redis sooner; docs/benchmarks.md).
    worker_runs: Literal["all", "workflows", "activities"] = "all"
    # A provider call silent this long, before its first chunk or between two, is hung and cut:
    # one limit for every task type (unset: the per-task-type limits below and built in).
    stall_timeout_seconds: float | None = Field(None, gt=0, le=600)
    # Hang limits by task type (embedding, default, reasoning) or model name (JSON object), e.g.
    # {"reasoning": {"first_chunk_seconds": 90, "silence_seconds": 30}}; a model's entry wins.
    hang_limits: dict[str, HangLimits] = Field(default_factory=dict)
    # Let each model's observed pace tighten or widen its hang limits, within bounds (README).
    learn_hang_limits: bool = True
    # Activities one worker runs at once: it takes no more work than it can heartbeat for.
    worker_activity_slots: int = Field(8, ge=1, le=1000)
    # 429: wait what the provider asks, up to this long; or stop the step at once.
    rate_limit_max_wait_seconds: float = Field(60.0, gt=0, le=3600)
    stop_on_rate_limit: bool = False
    # Provider quotas per model shared by all workers through Redis (JSON object), e.g.
    # {"gpt-4.1": {"rpm": 500, "tpm": 30000}}; models not named are not paced.
    rate_limits: dict[str, ModelQuota] = Field(default_factory=dict)
    # Workflows a worker keeps in memory between their workflow tasks (the SDK's default). 0
    # makes every workflow task replay the task's whole history: slow, and a strict check that
    # every path replays (the tests run workers that way).
    max_cached_workflows: int = Field(1000, ge=0, le=100_000)
    # Where the worker serves Prometheus metrics (0 turns them off).
    metrics_port: int = Field(9464, ge=0, le=65535)
    # OpenTelemetry spans for tasks, activities and provider calls (longtask/tracing.py):
    # "console" prints them to stderr, "external" leaves the exporter to the application.
    tracing: Literal["off", "console", "external"] = "off"
    # How often a running step tells its workflow how far it got (each signal is history).
    progress_signal_seconds: float = Field(1.0, gt=0, le=60)
    # Documents of one task in flight at once, documents per batch activity, and LLM calls
    # in flight inside one activity.
    document_concurrency: int = Field(64, ge=1, le=1024)
    batch_documents: int = Field(16, ge=1, le=256)
    call_concurrency: int = Field(16, ge=1, le=256)
    # Per-task budget (money and/or tokens) unless a task names its own; unset: no limit.
    budget_usd: float | None = Field(None, gt=0)
    budget_tokens: int | None = Field(None, gt=0)
    # US dollars per million tokens per model (JSON object), e.g. {"gpt-4.1": 8.0}.
    prices: dict[str, Price] = Field(default_factory=lambda: dict(DEFAULT_PRICES_PER_MILLION))
    # Overall deadline of a task; past it the task ends timed out with its checkpoints intact.
    task_deadline_seconds: float = Field(24 * 3600, gt=0)

    state_dir: Path = Path(".state")
    # Payloads this big or bigger go to files instead of Temporal's history (default: under
    # the state folder); every worker and client of a deployment must see the same folder.
    payload_dir: Path | None = None
    payload_threshold_bytes: int = Field(128 * 1024, ge=1024, le=2 * 1024 * 1024)
    # Files of the payload store and the report folder untouched for this many days (and for
    # longer than a task's deadline) are deleted by the workers; 0 keeps them forever. Keep it
    # at least the Temporal namespace's retention: histories of ended tasks name payloads.
    retention_days: float = Field(30.0, ge=0)
    # Payload encryption (docs/codec.md): AES-GCM on every payload of the history and the
    # payload store. Keys are `keyid:base64key`, comma-separated (one per line in the file);
    # the first encrypts and all decrypt, so keys rotate. Declared before `encrypt_payloads`,
    # whose check reads them.
    payload_keys: SecretStr | None = None
    payload_key_file: Path | None = None
    encrypt_payloads: bool = False
    # The codec server (`python -m longtask.tooling.codec_server`) shows decrypted payloads in the
    # Temporal UI; it allows the UI origins listed here (comma-separated; default the embedded
    # UI, http://127.0.0.1:{temporal_ui_port} and http://localhost:{temporal_ui_port}).
    codec_server_port: int = Field(8081, ge=1, le=65535)
    codec_cors_origins: str = ""
    # Before a task's first document, check each model of its route with one tiny call, so
    # an unknown model (404) or a refused key ends the task before anything is paid for.
    check_models: bool = True
    # false: the Redis mirror leaves out conversation text, streamed text, step outputs and
    # error text, keeping ids, structure, progress and counters (docs/privacy.md).
    mirror_messages: bool = True

    @field_validator("encrypt_payloads")
    @classmethod
    def _check_payload_keys(cls, value: bool, info: ValidationInfo) -> bool:
        if value:
            # Imported here: the codec module needs these settings' type, not the reverse.
            from longtask.codec import load_keyring

            load_keyring(info.data.get("payload_keys"), info.data.get("payload_key_file"))
        return value

    # Where finished reports are written, one file per document (default: under the state
    # folder); shared by workers and clients like the payload folder.
    report_dir: Path | None = None
    # Latency the embedded LLM server adds to every answer, so progress can be watched.
    llm_server_latency_ms: int = Field(200, ge=0, le=60_000)
    # Pause between streamed chunks of the embedded LLM server, paced like real generation.
    llm_server_chunk_delay_ms: int = Field(20, ge=0, le=10_000)

    @field_validator("temporal_address")
    @classmethod
    def _check_temporal_address(cls, value: str) -> str:
        _host_port(value, "the Temporal address")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        parts = urlsplit(value)
        shown = redact_url(value)  # a bad URL may still hold a good password
        if parts.scheme not in {"redis", "rediss", "unix"}:
            raise ValueError(f"must start with redis://, rediss:// or unix://, got {shown!r}")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError(f"has no host: {shown!r}")
        return value

    @field_validator(
        "temporal_tls_cert",
        "temporal_tls_key",
        "temporal_tls_ca",
        "temporal_tls_server_name",
        "temporal_api_key",
        "redis_tls_ca",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # `LTM_TEMPORAL_TLS_CERT=` (as compose writes an unset variable) means no file.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("temporal_tls_cert", "temporal_tls_key", "temporal_tls_ca", "redis_tls_ca")
    @classmethod
    def _check_pem_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            _read_pem(value)
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Self:
        cert, key = "LTM_TEMPORAL_TLS_CERT", "LTM_TEMPORAL_TLS_KEY"
        if self.temporal_tls_cert is not None and self.temporal_tls_key is None:
            raise ValueError(f"{key} is missing: {cert} needs its private key")
        if self.temporal_tls_key is not None and self.temporal_tls_cert is None:
            raise ValueError(f"{cert} is missing: {key} is only used with its certificate")
        if self.redis_tls_ca is not None and urlsplit(self.redis_url).scheme != "rediss":
            raise ValueError(
                "LTM_REDIS_TLS_CA is set but LTM_REDIS_URL does not use TLS: "
                f"write rediss:// instead of {urlsplit(self.redis_url).scheme}://"
            )
        return self

    @field_validator("llm_base_url")
    @classmethod
    def _check_llm_base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(
                f"must be an http(s) URL such as http://127.0.0.1:8000/v1, got {value!r}"
            )
        return value.rstrip("/")

    @property
    def payload_folder(self) -> Path:
        return (self.payload_dir or self.state_dir / "payloads").resolve()

    def report_folder(self) -> Path:
        return (self.report_dir or self.state_dir / "reports").resolve()

    def timeout_policy(self) -> TimeoutPolicy:
        hang_limits = dict(self.hang_limits)
        if self.stall_timeout_seconds is not None:
            blanket = HangLimits(
                first_chunk_seconds=self.stall_timeout_seconds,
                silence_seconds=self.stall_timeout_seconds,
            )
            for task_type in TaskType:
                hang_limits.setdefault(task_type.value, blanket)
        return TimeoutPolicy(
            hang_limits=hang_limits,
            learn_hang_limits=self.learn_hang_limits,
            rate_limit_max_wait_seconds=self.rate_limit_max_wait_seconds,
            stop_on_rate_limit=self.stop_on_rate_limit,
        )

    @property
    def temporal_tls_enabled(self) -> bool:
        """TLS to Temporal: asked for, or implied by a certificate, a CA, a name or an API key."""
        return self.temporal_tls or any(
            setting is not None
            for setting in (
                self.temporal_tls_cert,
                self.temporal_tls_ca,
                self.temporal_tls_server_name,
                self.temporal_api_key,
            )
        )

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # The Redis URL may carry a password: a repr (a log line, a traceback) shows it masked.
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "redis_url" else value

    @property
    def temporal_host_port(self) -> tuple[str, int]:
        return _host_port(self.temporal_address, "the Temporal address")

    @property
    def redis_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.redis_url)
        return parts.hostname or "127.0.0.1", parts.port or 6379

    @property
    def llm_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.llm_base_url)
        default = 443 if parts.scheme == "https" else 80
        return parts.hostname or "127.0.0.1", parts.port or default


def _unparsed(error: UnparsedSettingError) -> str:
    """One line naming the variable whose value could not be parsed, and why."""
    field = re.search(r'field "(\w+)"', str(error))
    name = f"{ENV_PREFIX}{field.group(1).upper()}" if field else "a setting"
    why = error.__cause__
    detail = f" ({why})" if why is not None else ""
    return f"{name}: not valid JSON{detail}; write a JSON object"


def load_settings() -> Settings:
    """Read the settings, turning a validation error into one line per bad variable."""
    try:
        return Settings()
    except UnparsedSettingError as error:
        # A JSON setting (LTM_PRICES, LTM_RATE_LIMITS) that is not JSON fails before validation.
        raise SettingsError(f"invalid setting: {_unparsed(error)}") from None
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            if not problem["loc"]:  # a combination of settings; the message names them
                lines.append(problem["msg"].removeprefix("Value error, "))
                continue
            field = str(problem["loc"][0])
            lines.append(f"{ENV_PREFIX}{field.upper()}: {problem['msg']}")
        if len(lines) == 1:
            raise SettingsError(f"invalid setting: {lines[0]}") from None
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
