"""Shape checks for success bodies: a surprise becomes ``InvalidResponseError``."""

from __future__ import annotations

from typing import Any

from ._errors import InvalidResponseError


def _invalid(what: str, body: Any) -> InvalidResponseError:
    return InvalidResponseError(200, f"unexpected response: {what}", body)


def unwrap_object(body: Any, key: str) -> dict[str, Any]:
    """``body[key]`` when wrapped (``{"task": {...}}``), else the bare object itself."""
    if isinstance(body, dict):
        inner = body.get(key)
        if isinstance(inner, dict):
            return inner
        if "id" in body:
            return body
    raise _invalid(f"expected an object with {key!r} or an 'id'", body)


def object_with_id(body: Any, key: str) -> dict[str, Any]:
    """Like ``unwrap_object``, and the object must carry a string ``id``."""
    obj = unwrap_object(body, key)
    task_id = obj.get("id")
    if not isinstance(task_id, str) or not task_id:
        raise _invalid(f"the {key} has no non-empty string 'id'", body)
    if not isinstance(obj.get("status"), str):
        raise _invalid(f"the {key} has no string 'status'", body)
    return obj


def logs_with_ids(body: Any) -> list[dict[str, Any]]:
    """``body["logs"]``: objects, each with an integer ``id`` (what ordering relies on)."""
    logs = list_of_objects(body, "logs")
    for log in logs:
        log_id = log.get("id")
        if not isinstance(log_id, int) or isinstance(log_id, bool):
            raise _invalid(f"a log has no integer 'id': {log_id!r}", body)
    return logs


def list_of_objects(body: Any, key: str) -> list[dict[str, Any]]:
    """``body[key]`` (or a bare list) as a list of objects."""
    items = body.get(key) if isinstance(body, dict) else body
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise _invalid(f"expected a list of objects under {key!r}", body)
    return items
