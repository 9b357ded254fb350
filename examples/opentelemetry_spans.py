"""Trace every HTTP attempt through the client's request hooks.

With ``opentelemetry-sdk`` installed (``pip install opentelemetry-sdk``) each
attempt becomes a span printed by the console exporter; without it, the same
hook events are printed as plain lines. The hooks never see headers, so the
API token cannot end up in a trace.
"""

from __future__ import annotations

from typing import Any

import anyio
from _connect import POLLING, server_url

from oomol_connect_anyio import OomolConnectClient, RequestEvent, ResponseEvent


def make_hooks() -> tuple[Any, Any]:
    """``(on_request, on_response)``: OpenTelemetry spans if available, else printing."""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
    except ImportError:
        print("opentelemetry-sdk is not installed: printing hook events instead of spans")
        return print_request, print_response

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    tracer = provider.get_tracer("oomol_connect_anyio")
    spans: dict[tuple[str, int], Any] = {}

    def on_request(event: RequestEvent) -> None:
        span = tracer.start_span(event.route, kind=trace.SpanKind.CLIENT)
        span.set_attribute("http.request.method", event.method)
        span.set_attribute("url.full", event.url)
        span.set_attribute("http.request.resend_count", event.attempt)
        spans[(event.url, event.attempt)] = span

    def on_response(event: ResponseEvent) -> None:
        span = spans.pop((event.url, event.attempt))
        if event.status is not None:
            span.set_attribute("http.response.status_code", event.status)
        if event.error is not None:
            span.set_attribute("error.type", event.error)
        span.end()

    return on_request, on_response


def print_request(event: RequestEvent) -> None:
    print(f"-> {event.route} (attempt {event.attempt})")


def print_response(event: ResponseEvent) -> None:
    outcome = event.status if event.error is None else event.error
    print(f"<- {event.route}: {outcome} in {event.elapsed * 1000:.1f} ms, {event.bytes} bytes")


async def main() -> None:
    on_request, on_response = make_hooks()
    async with server_url() as url, OomolConnectClient(
        base_url=url, on_request=on_request, on_response=on_response
    ) as client:
        result = await client.tasks.run(
            {"manifest": "demo::upper", "inputValues": {"text": "traced"}}, POLLING
        )
        print("result:", result["result"])


if __name__ == "__main__":
    anyio.run(main)
