"""Optional OpenTelemetry tracing (LTM_TRACING): spans for each task's workflow and activities
through Temporal's own interceptor, and one span per provider call.

``console`` prints finished spans to stderr, for a look without a collector; ``external``
only adds the spans, leaving the tracer provider and exporter to the application (for example
``opentelemetry-instrument``). Both need the ``tracing`` extra (opentelemetry-sdk).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from temporalio.client import Interceptor

from longtask.settings import Settings, SettingsError

Call = TypeVar("Call", bound=Callable[..., Awaitable[Any]])

# Set once this process traces: provider calls open spans only then.
_tracing_on = False
_console_configured = False


def tracing_interceptors(settings: Settings) -> list[Interceptor]:
    """The client interceptors LTM_TRACING asks for; a worker built on the client uses them
    too. The first call in a process sets up the console exporter when asked."""
    global _tracing_on
    if settings.tracing == "off":
        return []
    try:
        from temporalio.contrib.opentelemetry import TracingInterceptor
    except ImportError:
        raise SettingsError(
            f"LTM_TRACING={settings.tracing} needs OpenTelemetry: "
            "pip install 'long-task-manager[tracing]'"
        ) from None
    if settings.tracing == "console":
        _configure_console()
    _tracing_on = True
    return [TracingInterceptor()]


def _configure_console() -> None:
    global _console_configured
    if _console_configured:
        return
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider()
    # Simple, not batched: the client leaves without interpreter teardown (process_exit), so
    # a span must be out the moment it ends.
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    trace.set_tracer_provider(provider)
    _console_configured = True


def traced_provider_call(kind: str) -> Callable[[Call], Call]:
    """A span ``llm.{kind}`` around a provider call ``call(client, model, ...)`` when this
    process traces; nothing at all otherwise."""

    def wrap(call: Call) -> Call:
        @functools.wraps(call)
        async def traced(client: Any, model: str, *args: Any, **kwargs: Any) -> Any:
            if not _tracing_on:
                return await call(client, model, *args, **kwargs)
            from opentelemetry import trace

            tracer = trace.get_tracer("longtask.provider")
            with tracer.start_as_current_span(f"llm.{kind}", attributes={"llm.model": model}):
                return await call(client, model, *args, **kwargs)

        return cast(Call, traced)

    return wrap
