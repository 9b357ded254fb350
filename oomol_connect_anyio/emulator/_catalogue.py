"""Installed packages, their blocks, and the flows tasks can run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._blocks import BlockFunction, Target

PACKAGES_ROOT = "/oomol/packages"


@dataclass(frozen=True, slots=True)
class Package:
    """A package and its blocks."""

    name: str
    version: str
    description: str = ""
    blocks: tuple[Target, ...] = field(default=())

    @property
    def path(self) -> str:
        """Install directory, in the `<name>-<x.y.z>` layout."""
        return f"{PACKAGES_ROOT}/{self.name}-{self.version}"

    def listing(self) -> dict[str, Any]:
        """The entry of `GET /packages`."""
        return {
            "name": self.name,
            "version": self.version,
            "path": self.path,
            "description": self.description,
        }


def make_block(
    package: str,
    version: str,
    name: str,
    fn: BlockFunction,
    description: str = "",
    inputs: tuple[Mapping[str, Any], ...] = (),
) -> Target:
    """A block target installed in the `<name>-<x.y.z>` layout."""
    path = f"{PACKAGES_ROOT}/{package}-{version}/blocks/{name}"
    return Target(package, name, path, fn, description, inputs)


class Catalogue:
    """What is installed: packages, listed blocks and flows, and the lookup of manifests."""

    def __init__(self) -> None:
        self.packages: dict[str, Package] = {}
        self.blocks: dict[str, Target] = {}
        self.flows: list[Target] = []
        self._targets: dict[str, Target] = {}

    def install(self, package: Package) -> None:
        """Install (or reinstall) a package with its blocks."""
        self.packages[package.name] = package
        for block in package.blocks:
            self.add_block(block)

    def add_block(self, block: Target, *, latest: bool = True) -> None:
        """List a block; a `latest` one also answers to its `package::name` id."""
        self.blocks[block.path] = block
        self._targets[block.path] = block
        if latest:
            self._targets[block.block_id] = block

    def add_flow(self, flow: Target) -> None:
        """List a flow; it answers to its name and its path."""
        self.flows.append(flow)
        self._targets[flow.name] = flow
        self._targets[flow.path] = flow

    def find(self, manifest: str) -> Target | None:
        """The target of a `manifest` / `blockId` / `flowName` value."""
        return self._targets.get(manifest)
