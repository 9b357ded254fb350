"""Reading OOCANA task logs: the run's result and its error text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._types import TaskLog


def _event(log: TaskLog) -> dict[str, Any]:
    event = log.get("event")
    return event if isinstance(event, dict) else {}


def _is_root(event: dict[str, Any]) -> bool:
    return not event.get("stacks")


def extract_result(logs: Sequence[TaskLog]) -> Any:
    """The root-level ``BlockFinished.result``, else the last ``BlockFinished`` with one."""
    finished = [_event(log) for log in logs if log.get("type") == "BlockFinished"]
    with_result = [event for event in finished if event.get("result") is not None]
    for event in with_result:
        if _is_root(event):
            return event["result"]
    return with_result[-1]["result"] if with_result else None


def _as_text(error: Any) -> str:
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return error if isinstance(error, str) else repr(error)


def error_text(logs: Sequence[TaskLog]) -> str | None:
    """The distinct error messages of a run's logs, joined; ``None`` when there are none."""
    messages: list[str] = []
    for log in logs:
        if log.get("type") in ("BlockFinished", "SessionFinished", "BlockError", "FlowFinished"):
            event = _event(log)
            error = event.get("error")
            if error:
                text = _as_text(error)
                if text not in messages:
                    messages.append(text)
    return "; ".join(messages) if messages else None


def has_session_finished(logs: Sequence[TaskLog]) -> bool:
    return any(log.get("type") == "SessionFinished" for log in logs)
