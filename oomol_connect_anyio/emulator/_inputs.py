"""Server-side validation and normalisation of task input values."""

from __future__ import annotations

from typing import Any

from ._http import HTTPError

NodeInputs = list[dict[str, Any]]


def normalize_input_values(raw: Any) -> NodeInputs:
    """Return the wire form (NodeInputs[]) of any of the three accepted input forms."""
    if raw is None:
        return []
    if isinstance(raw, dict):
        return [{"nodeId": "_", "inputs": [{"handle": k, "value": v} for k, v in raw.items()]}]
    if not isinstance(raw, list):
        raise HTTPError(400, "inputValues must be a list or an object")
    if all(isinstance(item, dict) and "nodeId" in item for item in raw):
        for node in raw:
            if not isinstance(node["nodeId"], str) or not isinstance(node.get("inputs"), list):
                raise HTTPError(
                    400, "each node of inputValues needs a string nodeId and a list of inputs"
                )
            _check_handles(node["inputs"])
        return raw
    _check_handles(raw)
    return [{"nodeId": "_", "inputs": raw}]


def _check_handles(inputs: list[Any]) -> None:
    for item in inputs:
        if not isinstance(item, dict) or not isinstance(item.get("handle"), str):
            raise HTTPError(400, "each input value needs a string handle")


def root_inputs(node_inputs: NodeInputs) -> dict[str, Any]:
    """Handle -> value of the `_` node, or of the first node when there is no `_`."""
    if not node_inputs:
        return {}
    node = next((n for n in node_inputs if n["nodeId"] == "_"), node_inputs[0])
    return {item["handle"]: item.get("value") for item in node["inputs"]}
