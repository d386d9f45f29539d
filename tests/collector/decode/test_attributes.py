from __future__ import annotations

import json
import math

import pytest
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from meshlens.collector.decode.attributes import (
    KeyValueCache,
    any_value_to_python,
    any_value_to_text,
    attributes_to_dict,
    entries_json,
    resource_info,
    to_json,
)
from tests.collector.decode.samples import kv


def _nested() -> AnyValue:
    value = AnyValue()
    value.array_value.values.add(string_value="x")
    inner = value.array_value.values.add()
    inner.kvlist_value.values.add(key="b", value=AnyValue(bool_value=True))
    inner.kvlist_value.values.add(key="a", value=AnyValue(double_value=math.inf))
    return value


def test_any_value_types() -> None:
    assert any_value_to_python(AnyValue(string_value="é")) == "é"
    assert any_value_to_python(AnyValue(int_value=-(2**63))) == -(2**63)
    assert any_value_to_python(AnyValue(bool_value=False)) is False
    assert any_value_to_python(AnyValue(double_value=math.nan)) == "NaN"
    assert any_value_to_python(AnyValue(bytes_value=b"\x01\x02")) == "AQI="
    assert any_value_to_python(AnyValue()) is None
    assert any_value_to_python(_nested()) == ["x", {"b": True, "a": "Infinity"}]
    assert any_value_to_text(_nested()) == '["x",{"a":"Infinity","b":true}]'
    assert any_value_to_text(AnyValue(string_value="plain")) == "plain"
    assert any_value_to_text(AnyValue()) == ""


def test_deep_nesting_is_cut() -> None:
    value = AnyValue()
    node = value
    for _ in range(40):  # built in place: protobuf refuses to copy or parse this deep
        node = node.array_value.values.add()
    node.string_value = "leaf"
    depth, py = 0, any_value_to_python(value)
    while isinstance(py, list):
        py, depth = py[0], depth + 1
    assert py == "..." and depth == 32


def test_cache_matches_the_plain_path_and_stays_bounded() -> None:
    kvs = [kv("b", 1), kv("a", "x"), KeyValue(key="c", value=_nested()), kv("é", 0.5)]
    cache = KeyValueCache(max_entries=3)
    d, text = entries_json(cache.entries(kv.SerializeToString() for kv in kvs))
    assert d == attributes_to_dict(kvs)
    assert (
        text
        == to_json(attributes_to_dict(kvs))
        == json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    )
    assert len(cache) <= 3
    assert entries_json([]) == ({}, "{}")


def test_repeated_key_keeps_the_last_value() -> None:
    cache = KeyValueCache()
    raws = [
        kv("k", 1).SerializeToString(),
        kv("j", 0).SerializeToString(),
        kv("k", 2).SerializeToString(),
    ]
    assert entries_json(cache.entries(raws)) == ({"k": 2, "j": 0}, '{"j":0,"k":2}')


def test_resource_info_fallbacks() -> None:
    info = resource_info(Resource())
    assert (info.service_name, info.service_namespace, info.service_version) == ("unknown",) * 3
    assert info.attributes_json == "{}"
    info = resource_info(Resource(attributes=[kv("service.name", ""), kv("service.version", 3)]))
    assert (info.service_name, info.service_version) == ("unknown", "3")


@pytest.mark.parametrize(
    "value",
    [
        AnyValue(string_value=""),
        AnyValue(string_value="x" * 127),
        AnyValue(string_value="x" * 200),
        AnyValue(string_value="naïve ✓"),
        AnyValue(int_value=0),
        AnyValue(int_value=127),
        AnyValue(int_value=128),
        AnyValue(int_value=-1),
        AnyValue(int_value=2**63 - 1),
        AnyValue(int_value=-(2**63)),
        AnyValue(bool_value=True),
        AnyValue(double_value=1.5),
        AnyValue(),
    ],
)
@pytest.mark.parametrize("key", ["", "k", "ключ", "k" * 130])
def test_hand_parsed_key_values_match_protobuf(key: str, value: AnyValue) -> None:
    raw = KeyValue(key=key, value=value).SerializeToString()
    expected = {key: any_value_to_python(value)}
    assert entries_json(KeyValueCache().entries([raw])) == (expected, to_json(expected))


def test_hand_parser_rejects_what_protobuf_rejects() -> None:
    # varint that does not end where the value ends, then invalid UTF-8
    for raw in (b"\x0a\x01k\x12\x03\x18\x80\x80", b"\x0a\x01\xff\x12\x02\x0a\x00"):
        with pytest.raises((ProtobufDecodeError, UnicodeDecodeError)):
            KeyValueCache().entries([raw])
