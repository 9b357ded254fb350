"""Runnable targets, the context a block receives, and evaluation into a timeline."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from ._inputs import NodeInputs, root_inputs
from ._multipart import UploadedFile

# (offset in seconds from the start of the run, event type, inner node id or None, payload)
Entry = tuple[float, str, "str | None", "dict[str, Any] | None"]
BlockFunction = Callable[["BlockContext"], "Mapping[str, Any] | None"]

_SESSION_STARTED: Entry = (0.0, "SessionStarted", None, None)
_FLOW_STARTED: Entry = (0.0, "FlowStarted", None, None)
_BLOCK_STARTED: Entry = (0.0, "BlockStarted", None, None)  # its inputs are rendered from the task


@dataclass(frozen=True, slots=True)
class Target:
    """Something a task can run: a block of a package, or a flow."""

    package: str
    name: str
    path: str
    fn: BlockFunction
    description: str = ""
    inputs: tuple[Mapping[str, Any], ...] = ()
    is_flow: bool = False

    @property
    def block_id(self) -> str:
        """`package::name` (the flow name for flows)."""
        return self.name if self.is_flow else f"{self.package}::{self.name}"

    def listing(self) -> dict[str, Any]:
        """The entry of `GET /v1/blocks` (or of `GET /v1/flows` for a flow)."""
        head = {"name": self.name} if self.is_flow else {"package": self.package, "name": self.name}
        return {
            **head,
            "path": self.path,
            "description": self.description,
            "inputs": list(self.inputs),
        }


class BlockContext:
    """What a block function receives; its methods append events to a virtual timeline."""

    __slots__ = ("_entries", "_node", "_offset", "files", "inputs", "node_inputs")

    def __init__(
        self, node_inputs: NodeInputs, files: list[UploadedFile], entries: list[Entry]
    ) -> None:
        self.inputs: dict[str, Any] = root_inputs(node_inputs)
        self.node_inputs = node_inputs
        self.files = files
        self._offset = 0.0
        self._entries = entries
        self._node: str | None = None

    def log(self, text: str, stdio: Literal["stdout", "stderr"] = "stdout") -> None:
        """Emit a BlockLog line."""
        self.emit("BlockLog", {"log": str(text), "stdio": stdio})

    def progress(self, pct: float) -> None:
        """Emit a BlockProgress event (0..100)."""
        self.emit("BlockProgress", {"progress": min(100.0, max(0.0, float(pct)))})

    def output(self, handle: str, value: Any) -> None:
        """Emit a BlockOutput event."""
        self.emit("BlockOutput", {"handle": handle, "output": value})

    def sleep(self, seconds: float) -> None:
        """Advance the virtual time of the following events (does not block)."""
        seconds = float(seconds)
        if not seconds >= 0:
            raise ValueError(f"cannot sleep {seconds} seconds")
        self._offset += seconds

    @contextmanager
    def node(self, node_id: str, inputs: Mapping[str, Any]) -> Iterator[None]:
        """Emit the events inside as those of the inner flow node `node_id`."""
        self._node = node_id
        self.emit("BlockStarted", {"inputs": dict(inputs)})
        try:
            yield
        except Exception as exc:
            self.emit("BlockFinished", {"error": error_text(exc)})
            raise
        else:
            self.emit("BlockFinished", None)
        finally:
            self._node = None

    def emit(self, type_: str, payload: dict[str, Any] | None = None) -> None:
        """Emit any OOCANA event (e.g. FlowNodesWillRun) at the current offset."""
        self._entries.append((self._offset, type_, self._node, payload))


def _finish(result: object) -> dict[str, Any] | None:
    """The BlockFinished payload of a block's return value."""
    if result is None:
        return None
    if not isinstance(result, Mapping):
        raise TypeError(f"block returned {type(result).__name__}, expected a dict")
    return {"result": result if isinstance(result, dict) else dict(result)}


def error_text(exc: BaseException) -> str:
    """The message of an exception, or its type name when it has none."""
    return str(exc) or type(exc).__name__


@dataclass(slots=True)
class Timeline:
    """A run evaluated in advance: its events, its duration and whether it failed."""

    entries: list[Entry]
    end: float
    failed: bool


def evaluate(
    target: Target, node_inputs: NodeInputs, files: list[UploadedFile], trail: float
) -> Timeline:
    """Run a block function now and return its timeline; the closing events trail by `trail`."""
    entries: list[Entry] = [_SESSION_STARTED, _FLOW_STARTED if target.is_flow else _BLOCK_STARTED]
    ctx = BlockContext(node_inputs, files, entries)
    error: str | None = None
    try:
        finish = _finish(target.fn(ctx))
    except Exception as exc:
        error = error_text(exc)
        finish = {"error": error}
    at = ctx._offset + trail
    failure = None if error is None else {"error": error}
    entries.append((at, "BlockFinished", None, finish))
    if target.is_flow:
        entries.append((at, "FlowFinished", None, failure))
    entries.append((at, "SessionFinished", None, failure))
    return Timeline(entries, ctx._offset, error is not None)
