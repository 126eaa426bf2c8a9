"""OpenTelemetry spans for jobs (needs ``opentelemetry-api``: ``upnext[otel]``).

`TracingMiddleware` makes a PRODUCER span when a job is submitted and a
CONSUMER span around each attempt's body, named and attributed as the
OpenTelemetry messaging conventions say (``send <queue>``, ``process
<queue>``). The producer's trace context travels in the job's headers
(`Submission.headers`, `Job.headers`), so an attempt's span is a child of
the span that submitted the job; each attempt also writes its own span
context to the headers, which the retry's body carries, so a retry's span
has the producer as parent and a link to the attempt before it.

Enable it in code, in the producer and in the worker (the same `Worker` does
both): ``Worker(middleware=[TracingMiddleware()])``, or
``Worker(plugins=[upnext.otel])`` for the global tracer provider. Only this
module imports OpenTelemetry, and nothing imports it unless you do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from upnext.hooks import hookimpl
from upnext.middleware import CallNext, Job, Middleware, Submission

if TYPE_CHECKING:
    from upnext._worker import Worker

__all__ = ["PREVIOUS_ATTEMPT_HEADER", "TracingMiddleware", "upnext_middleware"]

PREVIOUS_ATTEMPT_HEADER = "upnext-previous-traceparent"
"""The header holding the last attempt's span context (a W3C ``traceparent``)."""

MESSAGING_SYSTEM = "upnext"

# The previous attempt's context is always W3C trace context, whatever the
# global propagator: it is only ever read back by this module.
_W3C = TraceContextTextMapPropagator()
_TRACEPARENT = "traceparent"


class TracingMiddleware(Middleware):
    """Spans for submitted jobs and for every attempt, linked across retries.

    `tracer_provider`: where spans go (None: the global one). `propagator`:
    how the producer's context is written to and read from the headers
    (None: the global one, W3C trace context and baggage by default).
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self.tracer = trace.get_tracer("upnext", tracer_provider=tracer_provider)
        self.propagator = propagator

    def _textmap(self) -> TextMapPropagator:
        # Read per call, so a global propagator set after this was built counts.
        return self.propagator if self.propagator is not None else propagate.get_global_textmap()

    async def before_enqueue(self, submission: Submission) -> None:
        """A PRODUCER span (child of the caller's current span), injected into the headers."""
        attributes = {
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": submission.queue,
            "messaging.message.id": submission.job_id,
            "upnext.task": submission.task.name,
        }
        with self.tracer.start_as_current_span(
            f"send {submission.queue}", kind=SpanKind.PRODUCER, attributes=attributes
        ):
            self._textmap().inject(submission.headers)

    async def around_run(self, job: Job, call_next: CallNext) -> Any:
        """A CONSUMER span around the attempt: the producer's child, linked to the last attempt."""
        headers = job.headers
        links = _previous_attempt(headers)
        attributes: dict[str, str | int] = {
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": job.queue,
            "messaging.message.id": job.id,
            "upnext.task": job.function,
            "upnext.attempt": job.attempt,
        }
        with self.tracer.start_as_current_span(
            f"process {job.queue}",
            context=self._textmap().extract(headers),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            # Left in the headers for the retry's span to link to this one.
            own: dict[str, str] = {}
            _W3C.inject(own)
            headers[PREVIOUS_ATTEMPT_HEADER] = own[_TRACEPARENT]
            return await _traced_call(job, span, call_next)


async def _traced_call(job: Job, span: Span, call_next: CallNext) -> Any:
    """`call_next()`, with what stopped it recorded on `span`."""
    try:
        return await call_next()
    except asyncio.CancelledError:
        # Only a timeout failed the attempt; a shutdown, a lost lease or a
        # user's cancel stopped it without it failing.
        span.set_attribute("upnext.cancel_reason", job.cancel_reason or "unknown")
        if job.cancel_reason == "timeout":
            _record_failure(span, TimeoutError(f"job {job.id} ran past its timeout"))
        raise
    except Exception as exc:
        _record_failure(span, exc)
        raise


def _record_failure(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_attribute("error.type", f"{type(exc).__module__}.{type(exc).__qualname__}")
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _previous_attempt(headers: dict[str, str]) -> Sequence[Link]:
    """A link to the span of the attempt before this one, if one left its context."""
    traceparent = headers.get(PREVIOUS_ATTEMPT_HEADER)
    if traceparent is None:
        return ()
    context = _W3C.extract({_TRACEPARENT: traceparent})
    previous = trace.get_current_span(context).get_span_context()
    return (Link(previous),) if previous.is_valid else ()


@hookimpl
def upnext_middleware(worker: Worker) -> Sequence[Middleware]:
    """`Worker(plugins=[upnext.otel])`: tracing through the global tracer provider."""
    return [TracingMiddleware()]
