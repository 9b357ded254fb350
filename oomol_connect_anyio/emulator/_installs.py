"""Package install tasks: pending -> running -> success | failed, read from the clock."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from ._catalogue import Catalogue, Package
from ._clock import Clock


class InstallTask:
    """One install: pending for the first half of its duration, running for the second."""

    __slots__ = ("created", "end", "error", "id", "name", "package", "version")

    def __init__(
        self, name: str, version: str | None, package: Package | None, created: float, end: float
    ) -> None:
        self.id = str(uuid.uuid4())
        self.name = name
        self.version = version or (package.version if package else None)
        self.package = package
        label = name if version is None else f"{name}@{version}"
        self.error = None if package else f"package '{label}' not found"
        self.created = created
        self.end = end

    def _changes(self) -> tuple[float, float]:
        return (self.created + self.end) / 2, self.end

    def status(self, now: float) -> str:
        """pending, running, then success or failed."""
        running_at, end = self._changes()
        if now >= end:
            return "failed" if self.error else "success"
        return "running" if now >= running_at else "pending"

    def to_json(self, clock: Clock, now: float) -> dict[str, Any]:
        """The camelCase InstallTask of the API."""
        status = self.status(now)
        running_at, end = self._changes()
        updated = {"pending": self.created, "running": running_at}.get(status, end)
        body: dict[str, Any] = {"id": self.id, "name": self.name, "status": status}
        if self.version is not None:
            body["version"] = self.version
        if status == "success" and self.package:
            body["packagePath"] = self.package.path
        body["dependencies"] = []
        if status == "failed":
            body["error"] = self.error
        body["createdAt"] = clock.ms(self.created)
        body["updatedAt"] = clock.ms(updated)
        return body


class Installs:
    """Starts install tasks and installs their packages once they succeed."""

    def __init__(
        self,
        clock: Clock,
        duration: float,
        catalogue: Catalogue,
        installable: Mapping[str, Package],
    ) -> None:
        self.tasks: dict[str, InstallTask] = {}
        self._clock = clock
        self._duration = duration
        self._catalogue = catalogue
        self._installable = installable
        self._pending: list[InstallTask] = []

    def start(self, name: str, version: str | None) -> InstallTask:
        """Start installing `name` (optionally an exact `version`)."""
        package = self._installable.get(name) or self._catalogue.packages.get(name)
        if package is not None and version not in (None, package.version):
            package = None
        now = self._clock.now()
        task = InstallTask(name, version, package, now, now + self._duration)
        self.tasks[task.id] = task
        if package is not None:
            self._pending.append(task)
        return task

    def settle(self) -> None:
        """Install the packages of the install tasks that have succeeded by now."""
        if not self._pending:
            return
        now = self._clock.now()
        done = [t for t in self._pending if t.end <= now]
        for task in done:
            self._pending.remove(task)
            if task.package is not None:
                self._catalogue.install(task.package)
