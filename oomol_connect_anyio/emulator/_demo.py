"""The demo catalogue: package `demo`, the flow `demo-flow`, and installable packages."""

from __future__ import annotations

from typing import Any

from ._blocks import BlockContext, Target
from ._catalogue import Catalogue, Package, make_block

COUNT_LIMIT = 100_000
_TEXT = {"handle": "text", "json_schema": {"type": "string"}}
_SECONDS = {"handle": "seconds", "json_schema": {"type": "number"}}
_STEPS = {"handle": "steps", "json_schema": {"type": "integer"}}
_LINES = {"handle": "lines", "json_schema": {"type": "integer"}}


def _number(ctx: BlockContext, handle: str, default: float) -> float:
    value = ctx.inputs.get(handle)
    if value is None:
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"input {handle!r} must be a number, got {value!r}") from None


def _count(ctx: BlockContext, handle: str, default: int) -> int:
    value = _number(ctx, handle, default)
    if not 0 <= value <= COUNT_LIMIT:
        raise ValueError(f"input {handle!r} must be between 0 and {COUNT_LIMIT}")
    return int(value)


def _text(inputs: dict[str, Any]) -> str:
    text = inputs.get("text")
    if not isinstance(text, str):
        raise TypeError(f"input 'text' must be a string, got {type(text).__name__}")
    return text


def _echo(ctx: BlockContext) -> dict[str, Any]:
    return ctx.inputs


def _sleep(ctx: BlockContext) -> dict[str, Any]:
    seconds = _number(ctx, "seconds", 1.0)
    ctx.sleep(seconds)
    return {"slept": seconds}


def _fail(ctx: BlockContext) -> dict[str, Any]:
    ctx.log("about to fail", stdio="stderr")
    raise RuntimeError(str(ctx.inputs.get("message") or "demo failure"))


def _progress(ctx: BlockContext) -> dict[str, Any]:
    steps = _count(ctx, "steps", 5)
    seconds = _number(ctx, "seconds", 0.5)
    for step in range(1, steps + 1):
        ctx.sleep(seconds / steps)
        ctx.progress(100 * step / steps)
        ctx.log(f"step {step}/{steps}")
    return {"steps": steps}


def _upper(ctx: BlockContext) -> dict[str, Any]:
    return {"text": _text(ctx.inputs).upper()}


def _count_bytes(ctx: BlockContext) -> dict[str, Any]:
    files = [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in ctx.files]
    return {"files": files, "total": sum(f.size for f in ctx.files)}


def _log_flood(ctx: BlockContext) -> dict[str, Any]:
    lines = _count(ctx, "lines", 1000)
    seconds = _number(ctx, "seconds", 0.5)
    for line in range(1, lines + 1):
        ctx.sleep(seconds / lines)
        ctx.log(f"line {line} of {lines}")
    return {"lines": lines}


def _demo_flow(ctx: BlockContext) -> dict[str, Any]:
    ctx.emit("FlowNodesWillRun", {"start_nodes": ["upper"], "mid_nodes": [], "end_nodes": ["echo"]})
    with ctx.node("upper", ctx.inputs):
        ctx.sleep(0.01)
        text = _text(ctx.inputs).upper()
        ctx.output("text", text)
    with ctx.node("echo", {"text": text}):
        ctx.sleep(0.01)
        ctx.output("text", text)
    return {"text": text}


def _reverse(ctx: BlockContext) -> dict[str, Any]:
    return {"text": _text(ctx.inputs)[::-1]}


def _word_count(ctx: BlockContext) -> dict[str, Any]:
    return {"count": len(_text(ctx.inputs).split())}


def _thumbnail(ctx: BlockContext) -> dict[str, Any]:
    size = _count(ctx, "size", 128)
    return {"size": size, "thumbnails": [f"{f.name}.thumb.png" for f in ctx.files]}


def _package(name: str, version: str, description: str, *blocks: tuple[Any, ...]) -> Package:
    targets = tuple(make_block(name, version, *spec) for spec in blocks)
    return Package(name, version, description, targets)


DEMO = _package(
    "demo",
    "1.0.0",
    "Demo blocks of the Oomol Connect emulator",
    ("echo", _echo, "Result = inputs", ()),
    ("sleep", _sleep, "Runs `seconds` (default 1), result {slept}", (_SECONDS,)),
    ("fail", _fail, "Fails with `message`", ({"handle": "message"},)),
    ("progress", _progress, "`steps` progress events over `seconds`", (_STEPS, _SECONDS)),
    ("upper", _upper, "Upper-cases `text`", (_TEXT,)),
    ("count-bytes", _count_bytes, "Sizes and sha256 of the uploaded files", ()),
    ("log-flood", _log_flood, "`lines` log lines over `seconds`", (_LINES, _SECONDS)),
)
OLD_ECHO = Target("demo", "echo", "/oomol/packages/demo/0.9.0/blocks/echo", _echo, "Old echo")
DEMO_FLOW = Target(
    package="",
    name="demo-flow",
    path="/oomol/flows/demo-flow/flow.oo.yaml",
    fn=_demo_flow,
    description="Two nodes: upper-case `text`, then echo it",
    inputs=({"nodeId": "upper", "inputs": [{**_TEXT, "nullable": False, "value": "hello"}]},),
    is_flow=True,
)
INSTALLABLE = {
    package.name: package
    for package in (
        _package(
            "text-tools",
            "0.2.0",
            "Text utilities",
            ("reverse", _reverse, "Reverses `text`", (_TEXT,)),
            ("word-count", _word_count, "Counts the words of `text`", (_TEXT,)),
        ),
        _package(
            "image-tools",
            "1.1.0",
            "Image utilities",
            ("thumbnail", _thumbnail, "Pretends to thumbnail the uploaded files", ()),
        ),
    )
}


def demo_catalogue() -> Catalogue:
    """A catalogue with `demo` 1.0.0 installed, an older `demo` echo, and `demo-flow`."""
    catalogue = Catalogue()
    catalogue.install(DEMO)
    catalogue.add_block(OLD_ECHO, latest=False)
    catalogue.add_flow(DEMO_FLOW)
    return catalogue
