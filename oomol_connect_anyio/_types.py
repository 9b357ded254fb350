"""TypedDicts for every shape of the Connect API, and the polling options."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, TypedDict

TaskStatus = Literal["created", "pending", "running", "completed", "failed", "stopped"]
InstallTaskStatus = Literal["pending", "running", "success", "failed"]


class InputValue(TypedDict):
    """One handle's value."""

    handle: str
    value: Any


class NodeInputs(TypedDict):
    """The inputs of one node; ``nodeId`` ``"_"`` is the block itself."""

    nodeId: str
    inputs: list[InputValue]


TaskInputValues = Mapping[str, Any] | Sequence[InputValue] | Sequence[NodeInputs]
"""Any of the three accepted forms; the wire always carries ``list[NodeInputs]``."""


class CreateTaskRequest(TypedDict, total=False):
    """What ``tasks.create`` takes: ``manifest`` (or ``blockId``) and the inputs."""

    manifest: str
    blockId: str
    inputValues: TaskInputValues | None


class Task(TypedDict, total=False):
    id: str
    status: TaskStatus
    project_id: str
    manifest_path: str
    inputValues: list[NodeInputs]
    created_at: int
    updated_at: int


class TaskLog(TypedDict, total=False):
    id: int
    project_name: str
    session_id: str
    node_id: str
    manifest_path: str
    type: str
    event: dict[str, Any]
    created_at: int


class ListTasksResponse(TypedDict):
    tasks: list[Task]


class InputHandle(TypedDict, total=False):
    handle: str
    description: str
    json_schema: dict[str, Any]
    nullable: bool
    value: Any


class FlowNodeInputs(TypedDict):
    nodeId: str
    inputs: list[InputHandle]


class Flow(TypedDict, total=False):
    name: str
    path: str
    description: str
    inputs: list[FlowNodeInputs]


class ListFlowsResponse(TypedDict):
    flows: list[Flow]


class Block(TypedDict, total=False):
    package: str
    name: str
    path: str
    description: str
    inputs: list[InputHandle]
    blockId: str
    version: str


class ListBlocksResponse(TypedDict):
    blocks: list[Block]


class Package(TypedDict, total=False):
    name: str
    version: str
    path: str
    description: str


class ListPackagesResponse(TypedDict):
    packages: list[Package]


class PackageDependency(TypedDict, total=False):
    name: str
    version: str
    packagePath: str


class InstallTask(TypedDict, total=False):
    id: str
    name: str
    version: str
    status: InstallTaskStatus
    packagePath: str
    dependencies: list[PackageDependency]
    error: str
    createdAt: int
    updatedAt: int


class ListInstallTasksResponse(TypedDict):
    tasks: list[InstallTask]


class WaitStats(TypedDict):
    """What one wait cost (see the README, "Measuring polling overhead")."""

    status_polls: int
    log_fetches: int
    missed_polls: int
    retries: int
    requests: int
    bytes_received: int
    time_to_running_ms: float | None
    detection_latency_ms: float | None
    wall_ms: float


class _RunResultFields(TypedDict):
    task_id: str
    task: Task
    logs: list[TaskLog]
    result: Any


class RunResult(_RunResultFields, total=False):
    """What ``tasks.run`` returns; ``stats`` tells what the wait cost; ``server`` (the base
    URL) which server ran it, in the outcomes of a ``ServerPool``'s batch."""

    stats: WaitStats
    server: str


class BackoffStrategy(str, enum.Enum):
    """How the polling interval grows between polls."""

    FIXED = "fixed"
    EXPONENTIAL = "exponential"
    ADAPTIVE = "adaptive"  # learned from the client's completed runs (README, "Adaptive polling")


class PollingSchedule(TypedDict, total=False):
    """The schedule part of polling options (milliseconds); see ``PollingOptions``."""

    interval_ms: float
    timeout_ms: float | None
    max_interval_ms: float
    backoff_strategy: BackoffStrategy | Literal["fixed", "exponential", "adaptive"]
    backoff_factor: float
    stop_on_cancel: bool
    log_grace_ms: float
    poll_error_budget_ms: float


class PollingOptions(PollingSchedule, total=False):
    """Options of every wait; the defaults are the official client's."""

    on_progress: Callable[[Any], Awaitable[None] | None] | None
    on_log: Callable[[TaskLog], Awaitable[None] | None] | None


# --- adaptive polling: what ``client.polling_model`` shows and carries across processes


class ManifestDurations(TypedDict):
    """``PollingModel.stats()`` per manifest: the window of completed runs' durations."""

    samples: int
    seen: int
    learned: bool
    p10_ms: float
    p50_ms: float
    p90_ms: float
    max_ms: float


class PollingModelExport(TypedDict):
    """``PollingModel.export()``: JSON-ready samples per manifest (milliseconds, oldest first)."""

    version: int
    server: str
    durations_ms: dict[str, list[float]]


# ---


class ClientOptions(TypedDict, total=False):
    """The official client's options dict, accepted for easy porting."""

    base_url: str
    api_token: str | None
    default_headers: dict[str, str] | None
    timeout: float | None
