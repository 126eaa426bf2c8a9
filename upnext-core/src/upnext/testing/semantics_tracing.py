"""`TracingSemantics`: OpenTelemetry spans of `upnext.otel`, through a real worker.

The trace context travels in the job's headers, so whatever the broker does
with the body, the worker's span of the first attempt is a child of the
producer's span, and a retry's span is a child of it too, linked to the span
of the attempt before. Spans go to the SDK's in-memory exporter through a
tracer provider given to the middleware (never the global one). Needs
``upnext[otel]``; without OpenTelemetry these tests skip, saying so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from upnext.testing.semantics_base import SemanticsBase, Timing, WorkerFactory, violated

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Tracer

    from upnext.otel import TracingMiddleware

__all__ = ["TracingSemantics"]

LIMIT = 5.0


class Traced:
    """A `TracingMiddleware`, the exporter its spans end in, and a tracer for the caller."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from upnext.otel import TracingMiddleware

        provider = TracerProvider()
        self.exporter: InMemorySpanExporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.middleware: TracingMiddleware = TracingMiddleware(tracer_provider=provider)
        self.tracer: Tracer = provider.get_tracer("caller")

    def spans(self, name: str) -> list[ReadableSpan]:
        """The finished spans called `name`, in the order they ended."""
        return [span for span in self.exporter.get_finished_spans() if span.name == name]


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


class TracingSemantics(SemanticsBase):
    """Producer and worker spans, their parentage and retry links, on your broker."""

    @pytest.fixture
    def traced(self) -> Traced:
        """Spans into an in-memory exporter (skips without ``upnext[otel]``)."""
        reason = "TracingSemantics needs upnext[otel] (opentelemetry-api and opentelemetry-sdk)"
        pytest.importorskip("opentelemetry.sdk.trace", reason=reason)
        return Traced()

    @pytest.mark.asyncio
    async def test_the_worker_span_is_a_child_of_the_producer_span(
        self, make_worker: WorkerFactory, timing: Timing, traced: Traced, upnext_queue: str
    ) -> None:
        """send <queue> (PRODUCER, under the caller's span) -> process <queue> (CONSUMER)."""
        from opentelemetry.trace import SpanKind, StatusCode

        worker = make_worker(middleware=[traced.middleware])

        @worker.task
        async def traced_add(a: int, b: int) -> int:
            return a + b

        async with worker:
            with traced.tracer.start_as_current_span("caller") as caller:
                future = await traced_add.submit(a=1, b=2)
            assert (await future.result(timing.tolerance(LIMIT))).value == 3
        [producer] = traced.spans(f"send {upnext_queue}")
        [process] = traced.spans(f"process {upnext_queue}")
        assert producer.kind is SpanKind.PRODUCER
        assert process.kind is SpanKind.CONSUMER
        assert producer.parent is not None
        assert producer.parent.span_id == caller.get_span_context().span_id, violated(
            "the producer span is a child of the span current at submit"
        )
        assert process.parent is not None
        assert process.context is not None
        assert producer.context is not None
        assert (process.parent.trace_id, process.parent.span_id) == (
            producer.context.trace_id,
            producer.context.span_id,
        ), violated("the first attempt's span is a child of the producer span, via the headers")
        assert process.parent.is_remote
        assert process.status.status_code is StatusCode.UNSET
        assert not process.links
        expected = {
            "messaging.system": "upnext",
            "messaging.destination.name": upnext_queue,
            "messaging.message.id": future.job_id,
            "upnext.task": traced_add.name,
        }
        assert (
            _attributes(producer).items()
            >= {**expected, "messaging.operation.type": "send"}.items()
        )
        assert (
            _attributes(process).items()
            >= {
                **expected,
                "messaging.operation.type": "process",
                "upnext.attempt": 1,
            }.items()
        )

    @pytest.mark.asyncio
    async def test_a_retry_span_links_to_the_failed_attempt(
        self, make_worker: WorkerFactory, timing: Timing, traced: Traced, upnext_queue: str
    ) -> None:
        """Attempt 1 fails (ERROR, exception event); attempt 2's span links to it."""
        from opentelemetry.trace import StatusCode

        worker = make_worker(middleware=[traced.middleware])
        runs: list[int] = []

        @worker.task(retries=1, retry_delay=timing.delay(0.05))
        async def flaky() -> str:
            runs.append(1)
            if len(runs) == 1:
                raise ValueError("first attempt fails")
            return "ok"

        async with worker:
            future = await flaky.submit()
            assert (await future.result(timing.tolerance(LIMIT))).value == "ok"
        [producer] = traced.spans(f"send {upnext_queue}")
        first, second = traced.spans(f"process {upnext_queue}")
        assert producer.context is not None
        assert first.context is not None
        assert second.context is not None
        assert [_attributes(s)["upnext.attempt"] for s in (first, second)] == [1, 2]
        for attempt in (first, second):
            assert attempt.parent is not None
            assert attempt.parent.span_id == producer.context.span_id, violated(
                "every attempt's span is a child of the producer span"
            )
        assert [link.context.span_id for link in second.links] == [first.context.span_id], violated(
            "a retry's span links to the span of the attempt before it"
        )
        assert first.status.status_code is StatusCode.ERROR
        assert [event.name for event in first.events] == ["exception"]
        assert _attributes(first)["error.type"] == "builtins.ValueError"
        assert second.status.status_code is StatusCode.UNSET
        assert not second.events
