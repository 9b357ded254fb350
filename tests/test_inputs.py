"""Input normalisation and task-request validation, before anything is sent."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from helpers import TOKEN, json_of, make_client, mock_api, task
from hypothesis import given, settings
from hypothesis import strategies as st

from oomol_connect_anyio import normalize_input_values
from oomol_connect_anyio._inputs import build_create_payload

ROOT_EMPTY = [{"nodeId": "_", "inputs": []}]

# --------------------------------------------------------------------------- the table


@pytest.mark.parametrize(
    ("given_values", "wire"),
    [
        pytest.param(
            {"text": "hi", "n": 3},
            [{"nodeId": "_", "inputs": [
                {"handle": "text", "value": "hi"}, {"handle": "n", "value": 3},
            ]}],
            id="form1-dict",
        ),
        pytest.param(
            [{"handle": "text", "value": "hi"}, {"handle": "opt"}],
            [{"nodeId": "_", "inputs": [
                {"handle": "text", "value": "hi"}, {"handle": "opt", "value": None},
            ]}],
            id="form2-handles",
        ),
        pytest.param(
            [
                {"nodeId": "node1", "inputs": [{"handle": "text", "value": "hi"}]},
                {"nodeId": "node2", "inputs": []},
                {"nodeId": "node3"},
            ],
            [
                {"nodeId": "node1", "inputs": [{"handle": "text", "value": "hi"}]},
                {"nodeId": "node2", "inputs": []},
                {"nodeId": "node3", "inputs": []},
            ],
            id="form3-nodes",
        ),
        pytest.param(
            ({"handle": "a", "value": [1, {"b": None}]},),
            [{"nodeId": "_", "inputs": [{"handle": "a", "value": [1, {"b": None}]}]}],
            id="form2-tuple",
        ),
        pytest.param({}, ROOT_EMPTY, id="empty-dict"),
        pytest.param(None, ROOT_EMPTY, id="none"),
        pytest.param([], ROOT_EMPTY, id="empty-list"),
    ],
)
def test_normalises_every_accepted_form(given_values: Any, wire: Any) -> None:
    assert normalize_input_values(given_values) == wire


def test_normalising_does_not_mutate_the_callers_values() -> None:
    values = [{"handle": "a", "value": {"deep": [1]}}]
    snapshot = json.dumps(values)
    normalize_input_values(values)
    assert json.dumps(values) == snapshot


@pytest.mark.parametrize(
    ("bad", "error", "names"),
    [
        pytest.param("text", TypeError, "str", id="string"),
        pytest.param(3, TypeError, "int", id="int"),
        pytest.param(b"x", TypeError, "bytes", id="bytes"),
        pytest.param(
            [{"handle": "a", "value": 1}, {"nodeId": "n", "inputs": []}],
            ValueError, "inputValues[1]", id="mixed-forms",
        ),
        pytest.param(
            [{"nodeId": "n", "inputs": []}, {"handle": "a", "value": 1}],
            ValueError, "inputValues[1]", id="mixed-forms-node-first",
        ),
        pytest.param([{"value": 1}], ValueError, "inputValues[0]", id="item-without-handle"),
        pytest.param(
            [{"handle": "a"}, {"handle": "", "value": 1}],
            ValueError, "inputValues[1]", id="empty-handle",
        ),
        pytest.param([{"handle": "a"}, "b"], TypeError, "inputValues[1]", id="non-dict-item"),
        pytest.param(
            [{"nodeId": 7, "inputs": []}], ValueError, "inputValues[0].nodeId", id="int-nodeId",
        ),
        pytest.param(
            [{"nodeId": "ok"}, {"nodeId": "", "inputs": []}],
            ValueError, "inputValues[1].nodeId", id="empty-nodeId",
        ),
        pytest.param(
            [{"nodeId": "n", "inputs": "a"}], TypeError, "inputValues[0].inputs", id="inputs-str",
        ),
        pytest.param(
            [{"nodeId": "n", "inputs": [{"handle": "a"}, 5]}],
            TypeError, "inputValues[0].inputs[1]", id="node-input-not-dict",
        ),
        pytest.param(
            [{"nodeId": "n", "inputs": [], "extra": 1}],
            ValueError, "inputValues[0]", id="node-unknown-key",
        ),
        pytest.param(
            [{"handle": "a", "value": 1, 2: 3}], ValueError, "inputValues[0]",
            id="handle-unknown-non-str-key",
        ),
        pytest.param({"": 1}, ValueError, "''", id="empty-key"),
        pytest.param({1: 1}, ValueError, "1", id="int-key"),
        pytest.param({"when": {1, 2}}, TypeError, "'when'", id="set-value"),
        pytest.param({"obj": object()}, TypeError, "'obj'", id="object-value"),
        pytest.param({"x": math.nan}, ValueError, "'x'", id="nan-value"),
        pytest.param(
            [{"handle": "h", "value": b"raw"}], TypeError, "inputValues[0]", id="bytes-value",
        ),
        pytest.param(
            [{"nodeId": "n", "inputs": [{"handle": "ok"}, {"handle": "f", "value": {1j}}]}],
            TypeError, "inputValues[0].inputs[1]", id="nested-bad-value",
        ),
    ],
)
def test_bad_shapes_raise_naming_the_offending_item(bad: Any, error: type, names: str) -> None:
    with pytest.raises(error) as info:
        normalize_input_values(bad)
    assert names in str(info.value)


def test_a_circular_value_is_rejected() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="'loop'"):
        normalize_input_values({"loop": loop})


# --------------------------------------------------------------------------- properties

handles = st.text(min_size=1, max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=8,
)
input_items = st.lists(
    st.fixed_dictionaries({"handle": handles, "value": json_values}), max_size=4
)
node_items = st.lists(
    st.fixed_dictionaries({"nodeId": handles, "inputs": input_items}), min_size=1, max_size=3
)
fast = settings(max_examples=25, deadline=None, database=None)


@fast
@given(st.dictionaries(handles, json_values, max_size=5))
def test_form1_becomes_one_root_node(values: dict[str, Any]) -> None:
    wire = normalize_input_values(values)
    assert wire == [{"nodeId": "_", "inputs": [
        {"handle": key, "value": value} for key, value in values.items()
    ]}]


@fast
@given(input_items)
def test_form2_becomes_one_root_node(items: list[dict[str, Any]]) -> None:
    assert normalize_input_values(items) == [{"nodeId": "_", "inputs": items}]


@fast
@given(node_items)
def test_form3_is_kept_as_it_is(items: list[dict[str, Any]]) -> None:
    assert normalize_input_values(items) == items


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
    | st.binary(max_size=3) | st.sampled_from(["handle", "value", "nodeId", "inputs", "_"])
    | st.builds(object) | st.complex_numbers(),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.frozensets(st.integers(), max_size=2)
        | st.dictionaries(
            st.sampled_from(["handle", "value", "nodeId", "inputs", "x"]) | st.integers(),
            inner, max_size=3,
        )
    ),
    max_leaves=10,
)


@settings(max_examples=100, deadline=None, database=None)
@given(junk)
def test_junk_is_either_rejected_or_normalised_to_strict_json(values: Any) -> None:
    try:
        wire = normalize_input_values(values)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        wire = None
    if wire is None:
        assert message  # every rejection explains itself
        return
    assert isinstance(wire, list)
    assert wire
    for node in wire:
        assert set(node) == {"nodeId", "inputs"}
        assert isinstance(node["nodeId"], str)
        assert node["nodeId"]
        for item in node["inputs"]:
            assert set(item) == {"handle", "value"}
            assert isinstance(item["handle"], str)
            assert item["handle"]
    json.dumps(wire, allow_nan=False)


# --------------------------------------------------------------------------- create requests


@pytest.mark.parametrize("target_key", ["manifest", "blockId", "flowName"])
def test_every_target_key_is_sent_as_manifest(target_key: str) -> None:
    payload = build_create_payload({target_key: "pkg::blk", "inputValues": {"a": 1}})
    assert payload == {
        "manifest": "pkg::blk",
        "inputValues": [{"nodeId": "_", "inputs": [{"handle": "a", "value": 1}]}],
    }


def test_the_same_target_under_two_keys_is_accepted() -> None:
    payload = build_create_payload({"manifest": "p::b", "blockId": "p::b"})
    assert payload == {"manifest": "p::b", "inputValues": ROOT_EMPTY}


@pytest.mark.parametrize(
    ("request_", "error", "match"),
    [
        pytest.param({"manifest": "a::b", "blockId": "c::d"}, ValueError, "different targets",
                     id="conflicting-targets"),
        pytest.param({"manifest": "a::b", "inputs": {}}, ValueError, "'inputs'",
                     id="unknown-key"),
        pytest.param({"inputValues": {}}, ValueError, "manifest", id="no-target"),
        pytest.param({"manifest": 3}, TypeError, "int", id="int-manifest"),
        pytest.param({"blockId": None}, TypeError, "NoneType", id="none-blockId"),
        pytest.param({"manifest": ""}, ValueError, "non-empty", id="empty-manifest"),
        pytest.param({"manifest": "   "}, ValueError, "non-empty", id="blank-manifest"),
        pytest.param({"manifest": "a::b", "inputValues": "x=1"}, TypeError, "str",
                     id="string-inputs"),
        pytest.param({"manifest": "a::b", "inputValues": [{"value": 1}]}, ValueError,
                     r"inputValues\[0\]", id="bad-inputs"),
        pytest.param({"manifest": "a::b", "inputValues": {"s": {1}}}, TypeError, "'s'",
                     id="unserialisable"),
        pytest.param("a::b", TypeError, "dict", id="not-a-dict"),
    ],
)
@pytest.mark.anyio
async def test_create_rejects_bad_requests_before_any_request(
    request_: Any, error: type, match: str
) -> None:
    with mock_api() as router:
        route = router.post("/v1/tasks").respond(200, json={"task": task()})
        async with make_client() as client:
            with pytest.raises(error, match=match) as info:
                await client.tasks.create(request_)
        assert len(router.calls) == 0
    assert route.call_count == 0
    assert TOKEN not in repr(info.value)


@pytest.mark.anyio
async def test_create_sends_block_id_as_manifest_and_normalised_inputs() -> None:
    with mock_api() as router:
        route = router.post("/v1/tasks").respond(200, json={"task": task()})
        async with make_client() as client:
            await client.tasks.create({"blockId": "pkg::blk", "inputValues": [
                {"handle": "text", "value": "hi"},
            ]})
    body = json_of(route.calls.last.request)
    assert body == {
        "manifest": "pkg::blk",
        "inputValues": [{"nodeId": "_", "inputs": [{"handle": "text", "value": "hi"}]}],
    }


@pytest.mark.anyio
async def test_create_with_files_validates_inputs_before_any_request() -> None:
    with mock_api() as router:
        router.post("/v1/tasks").respond(200, json={"task": task()})
        async with make_client() as client:
            with pytest.raises(ValueError, match=r"'x'"):
                await client.tasks.create_with_files("a::b", {"x": math.inf}, b"data")
            with pytest.raises(TypeError, match="int"):
                await client.tasks.create_with_files(5, {}, b"data")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="non-empty"):
                await client.tasks.create_with_files("", {}, b"data")
        assert len(router.calls) == 0


def test_request_is_not_mutated() -> None:
    request = {"blockId": "p::b", "inputValues": {"a": 1}}
    build_create_payload(request)
    assert request == {"blockId": "p::b", "inputValues": {"a": 1}}
