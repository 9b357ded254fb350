"""The Connect routes, the emulator's own `/__emulator` routes, and path matching."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from python_multipart.multipart import parse_options_header

from ._faults import rules_from_json
from ._http import HTTPError, Request, Response, json_response, parse_json, read_body
from ._inputs import normalize_input_values
from ._logs import visible_logs
from ._multipart import UploadedFile, parse_multipart
from ._state import EmulatorState
from ._tasks import Task

Handler = Callable[[EmulatorState, Request], Awaitable[Response]]
USER_ID = "emulator-user"
_TARGET_FIELDS = ("manifest", "blockId", "flowName")


async def _list_flows(emu: EmulatorState, req: Request) -> Response:
    return json_response({"flows": [flow.listing() for flow in emu.catalogue.flows]})


async def _list_blocks(emu: EmulatorState, req: Request) -> Response:
    emu.installs.settle()
    return json_response({"blocks": [block.listing() for block in emu.catalogue.blocks.values()]})


async def _list_tasks(emu: EmulatorState, req: Request) -> Response:
    now = emu.clock.now()
    return json_response({"tasks": [t.to_json(now) for t in reversed(emu.store.tasks.values())]})


async def _create_task(emu: EmulatorState, req: Request) -> Response:
    body, files = await _read_create_body(req)
    manifest = next((body[k] for k in _TARGET_FIELDS if body.get(k) is not None), None)
    if not isinstance(manifest, str):
        raise HTTPError(400, "missing manifest (or blockId / flowName): a string is required")
    input_values = normalize_input_values(body.get("inputValues"))
    emu.installs.settle()
    target = emu.catalogue.find(manifest)
    if target is None:
        raise HTTPError(400, f"unknown manifest '{manifest}'")
    task = emu.store.create(manifest, target, input_values, files)
    emu.counters.tasks_created += 1
    return _task_response(emu, task, created=True)


async def _read_create_body(req: Request) -> tuple[dict[str, Any], list[UploadedFile]]:
    content_type = req.header(b"content-type") or b""
    mime, _ = parse_options_header(content_type)
    if mime == b"multipart/form-data":
        fields, files = await parse_multipart(content_type, req.receive)
        form: dict[str, Any] = dict(fields)
        if "inputValues" in form:
            form["inputValues"] = parse_json(form["inputValues"], "inputValues field")
        return form, files
    if mime not in (b"", b"application/json") and not mime.endswith(b"+json"):
        raise HTTPError(415, f"unsupported content type '{mime.decode('latin-1')}'")
    data = await read_body(req.receive)
    if data.startswith(b"--") and b"content-disposition:" in data[:4096].lower():
        raise HTTPError(
            415,
            "the body is multipart/form-data but the Content-Type header is not: "
            "send multipart/form-data with its boundary",
        )
    body = parse_json(data)
    if not isinstance(body, dict):
        raise HTTPError(400, "the JSON body must be an object")
    return body, []


def _find_task(emu: EmulatorState, req: Request) -> Task:
    task = emu.store.tasks.get(req.param or "")
    if task is None:
        raise HTTPError(404, f"task '{req.param}' not found")
    return task


def _task_response(emu: EmulatorState, task: Task, *, created: bool = False) -> Response:
    body = task.to_json(emu.clock.now())
    if emu.envelope == "bare":
        return json_response({"task": body} if created else body)
    if created:
        return json_response({"task": body, "userID": USER_ID, "success": True})
    return json_response({"task": body, "success": True})


async def _get_task(emu: EmulatorState, req: Request) -> Response:
    return _task_response(emu, _find_task(emu, req))


async def _stop_task(emu: EmulatorState, req: Request) -> Response:
    task = _find_task(emu, req)
    emu.store.stop(task)
    emu.counters.stops += 1
    return _task_response(emu, task)


async def _task_logs(emu: EmulatorState, req: Request) -> Response:
    logs = visible_logs(_find_task(emu, req), emu.clock, emu.clock.now())
    tail = b"]}" if emu.envelope == "bare" else b'],"success":true}'
    return Response(200, b'{"logs":[' + b",".join(logs) + tail)


async def _list_packages(emu: EmulatorState, req: Request) -> Response:
    emu.installs.settle()
    return json_response({"packages": [p.listing() for p in emu.catalogue.packages.values()]})


async def _install_package(emu: EmulatorState, req: Request) -> Response:
    body = parse_json(await read_body(req.receive))
    name = body.get("name") if isinstance(body, dict) else None
    version = body.get("version") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        raise HTTPError(400, "missing package name")
    if version is not None and not isinstance(version, str):
        raise HTTPError(400, "version must be a string")
    task = emu.installs.start(name, version)
    return json_response({"success": True, "taskId": task.id})


async def _list_installs(emu: EmulatorState, req: Request) -> Response:
    now = emu.clock.now()
    tasks = [task.to_json(emu.clock, now) for task in emu.installs.tasks.values()]
    return json_response({"success": True, "tasks": tasks})


async def _get_install(emu: EmulatorState, req: Request) -> Response:
    task = emu.installs.tasks.get(req.param or "")
    if task is None:
        raise HTTPError(404, f"install task '{req.param}' not found")
    return json_response({"success": True, "task": task.to_json(emu.clock, emu.clock.now())})


async def _stats(emu: EmulatorState, req: Request) -> Response:
    return json_response(emu.stats())


async def _reset_stats(emu: EmulatorState, req: Request) -> Response:
    emu.reset_stats()
    return json_response({"success": True})


async def _list_faults(emu: EmulatorState, req: Request) -> Response:
    return json_response({"rules": [rule.to_json() for rule in emu.faults.rules]})


async def _add_faults(emu: EmulatorState, req: Request) -> Response:
    """Add one rule (a JSON object) or several (a list); windows start from now."""
    try:
        rules = rules_from_json(parse_json(await read_body(req.receive)))
    except (TypeError, ValueError) as exc:
        raise HTTPError(400, f"bad fault rule: {exc}") from None
    for rule in rules:
        emu.faults.add(rule)
    return json_response({"success": True, "rules": len(emu.faults.rules)})


async def _clear_faults(emu: EmulatorState, req: Request) -> Response:
    emu.faults.clear()
    return json_response({"success": True, "rules": 0})


async def _set_log_trail(emu: EmulatorState, req: Request) -> Response:
    body = parse_json(await read_body(req.receive))
    seconds = body.get("seconds") if isinstance(body, dict) else None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        raise HTTPError(400, "expected {\"seconds\": a number >= 0}")
    emu.log_trail = float(seconds)
    return json_response({"success": True, "log_trail": emu.log_trail})


async def _task_table(emu: EmulatorState, req: Request) -> Response:
    now = emu.clock.now()
    rows = [
        {
            "id": task.id,
            "status": task.status_at(now),
            "manifest": task.manifest,
            "stop_requested": task.stop_requested,
        }
        for task in emu.store.tasks.values()
    ]
    return json_response({"tasks": rows})


ROUTES: dict[str, dict[str, Handler]] = {
    "/v1/flows": {"GET": _list_flows},
    "/v1/blocks": {"GET": _list_blocks},
    "/v1/tasks": {"GET": _list_tasks, "POST": _create_task},
    "/v1/tasks/{id}": {"GET": _get_task},
    "/v1/tasks/{id}/stop": {"POST": _stop_task},
    "/v1/tasks/{id}/logs": {"GET": _task_logs},
    "/packages": {"GET": _list_packages},
    "/packages/install": {"GET": _list_installs, "POST": _install_package},
    "/packages/install/{id}": {"GET": _get_install},
}
INTERNAL: dict[str, dict[str, Handler]] = {
    "/__emulator/stats": {"GET": _stats},
    "/__emulator/reset-stats": {"POST": _reset_stats},
    "/__emulator/tasks": {"GET": _task_table},
    "/__emulator/faults": {"GET": _list_faults, "POST": _add_faults, "DELETE": _clear_faults},
    "/__emulator/log-trail": {"POST": _set_log_trail},
}
_STATIC = {tuple(t.split("/")[1:]): t for t in (*ROUTES, *INTERNAL) if "{id}" not in t}
_WITH_ID = {tuple(t.split("/")[1:]): t for t in ROUTES if "{id}" in t}


def match(raw_path: bytes) -> tuple[str | None, str | None]:
    """(route template, decoded id) of a raw path under `/` or `/api`; (None, None) if none."""
    segments = [unquote(s) for s in raw_path.decode("utf-8", "replace").split("/")[1:]]
    if segments and segments[0] == "api":
        del segments[0]
    if len(segments) > 1 and segments[-1] == "":
        segments.pop()
    template = _STATIC.get(tuple(segments))
    if template is not None:
        return template, None
    if len(segments) >= 3:
        template = _WITH_ID.get((segments[0], segments[1], "{id}", *segments[3:]))
        if template is not None:
            return template, segments[2]
    return None, None
