"""Normalising input values and task-creation requests before anything is sent."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._types import InputValue, NodeInputs

ROOT_NODE = "_"
_TARGET_KEYS = ("manifest", "blockId", "flowName")
_REQUEST_KEYS = frozenset((*_TARGET_KEYS, "inputValues"))


def normalize_input_values(values: object) -> list[NodeInputs]:
    """Turn any of the three input forms into the wire form, ``list[NodeInputs]``.

    ``None``, ``{}`` and ``[]`` become ``[{"nodeId": "_", "inputs": []}]``.
    Raises ``TypeError``/``ValueError`` naming the offending item.
    """
    if values is None:
        return [{"nodeId": ROOT_NODE, "inputs": []}]
    if isinstance(values, Mapping):
        return [{"nodeId": ROOT_NODE, "inputs": _inputs_from_mapping(values)}]
    if not isinstance(values, (list, tuple)):
        raise TypeError(
            "inputValues must be a dict of handle -> value, a list of {handle, value} "
            f"or a list of {{nodeId, inputs}}, not {type(values).__name__}"
        )
    if not values:
        return [{"nodeId": ROOT_NODE, "inputs": []}]
    for index, item in enumerate(values):
        if not isinstance(item, Mapping):
            raise TypeError(
                f"inputValues[{index}] must be a dict, not {type(item).__name__}"
            )
    with_node = ["nodeId" in item for item in values]
    if all(with_node):
        return [_node_inputs(item, index) for index, item in enumerate(values)]
    if any(with_node):
        index = with_node.index(not with_node[0])
        raise ValueError(
            f"inputValues[{index}] mixes forms: every item must have 'nodeId' "
            "(node form) or none may (handle form)"
        )
    return [{"nodeId": ROOT_NODE, "inputs": _input_list(values, "inputValues")}]


def _inputs_from_mapping(values: Mapping[Any, Any]) -> list[InputValue]:
    inputs: list[InputValue] = []
    for handle, value in values.items():
        if not isinstance(handle, str) or not handle:
            raise ValueError(f"inputValues key {handle!r} is not a non-empty handle name")
        inputs.append({"handle": handle, "value": _json_value(value, f"inputValues[{handle!r}]")})
    return inputs


def _node_inputs(item: Mapping[str, Any], index: int) -> NodeInputs:
    node_id = item["nodeId"]
    if not isinstance(node_id, str) or not node_id:
        raise ValueError(f"inputValues[{index}].nodeId must be a non-empty string")
    extra = set(item) - {"nodeId", "inputs"}
    if extra:
        raise ValueError(f"inputValues[{index}] has unknown keys {sorted(map(repr, extra))}")
    inputs = item.get("inputs", [])
    if not isinstance(inputs, (list, tuple)):
        raise TypeError(f"inputValues[{index}].inputs must be a list")
    return {"nodeId": node_id, "inputs": _input_list(inputs, f"inputValues[{index}].inputs")}


def _input_list(items: Any, where: str) -> list[InputValue]:
    result: list[InputValue] = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise TypeError(f"{where}[{index}] must be a dict, not {type(item).__name__}")
        handle = item.get("handle")
        if not isinstance(handle, str) or not handle:
            raise ValueError(f"{where}[{index}] has no 'handle' (a non-empty string)")
        extra = set(item) - {"handle", "value"}
        if extra:
            raise ValueError(f"{where}[{index}] has unknown keys {sorted(map(repr, extra))}")
        value = _json_value(item.get("value"), f"{where}[{index}] (handle {handle!r})")
        result.append({"handle": handle, "value": value})
    return result


def _json_value(value: Any, where: str) -> Any:
    """``value`` itself, once it is known to encode as strict JSON (no NaN, no cycles)."""
    try:
        json.dumps(value, allow_nan=False)
    except TypeError as exc:
        raise TypeError(f"{where}: the value is not JSON-serialisable: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{where}: the value is not valid JSON: {exc}") from None
    return value


def validate_manifest(manifest: object) -> str:
    """Check a manifest (``"pkg::block"`` or a flow) before it is sent."""
    if not isinstance(manifest, str):
        raise TypeError(f"manifest must be a string, not {type(manifest).__name__}")
    if not manifest.strip():
        raise ValueError("manifest must be a non-empty string such as 'package::block'")
    return manifest


def build_create_payload(request: object) -> dict[str, Any]:
    """Validate a create request and return the JSON body: ``manifest`` + ``inputValues``.

    ``blockId`` (official Python client) and ``flowName`` (older images) are
    accepted and sent as ``manifest``.
    """
    if not isinstance(request, Mapping):
        raise TypeError(
            f"a task request must be a dict with 'manifest' and 'inputValues', "
            f"not {type(request).__name__}"
        )
    unknown = set(request) - _REQUEST_KEYS
    if unknown:
        raise ValueError(
            f"unknown key(s) {sorted(map(str, unknown))} in task request; "
            "expected 'manifest' (or 'blockId') and 'inputValues'"
        )
    targets = {validate_manifest(request[key]) for key in _TARGET_KEYS if key in request}
    if not targets:
        raise ValueError("task request needs 'manifest' (or 'blockId')")
    if len(targets) > 1:
        raise ValueError("task request names different targets in 'manifest' and 'blockId'")
    return {
        "manifest": targets.pop(),
        "inputValues": normalize_input_values(request.get("inputValues")),
    }
