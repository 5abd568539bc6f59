"""The compiled wire decoder (``receiver/wire.pyx``) reads every traces body as the protobuf runtime does.

``decode.span_views(decode_traces_protobuf(body))`` (upb) is the reference:
for bodies built by the real protobuf classes from hypothesis-drawn content,
for the same bodies spliced so that protobuf's merge rules apply (a message
sent twice, a value sent twice, fields in any order, unknown fields of every
wire type), and for mutated bodies, whatever upb parses must give equal
views here, type for type, with the same count of spans dropped for their
ids; malformed bodies raise ``WireError`` and nothing else. ``make test``
builds the decoder (``setup.py build_ext``), so these tests run it.
"""

from __future__ import annotations

import random
import sys
from typing import Any, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from promptwall_otel.receiver import decode
from promptwall_otel.receiver import wire  # built by make test; an ImportError here means it was not built
from tests.receiver.test_decode import _span_fields, sdk  # noqa: F401  (sdk: the module's SDK fixture)

PROFILE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def upb(body: bytes) -> Optional[Tuple[List[Any], int]]:
    """The reference reading, or None where the protobuf runtime refuses the body."""
    try:
        views, invalid = decode.span_views(decode.decode_traces_protobuf(body))
    except decode.DecodeError:
        return None
    return [_span_fields(view) for view in views], invalid


def fast(body: bytes) -> Optional[Tuple[List[Any], int]]:
    try:
        views, invalid = wire.span_views(body, decode.MAX_STRING_CHARS)
    except wire.WireError:
        return None
    return [_span_fields(view) for view in views], invalid


def assert_read_alike(body: bytes) -> None:
    reference = upb(body)
    assert reference is not None, "the body must be one the protobuf runtime parses"
    assert fast(body) == reference


# --- wire-level building blocks, for what the message classes never write ------------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, wire_type: int, payload: bytes = b"") -> bytes:
    head = varint(number << 3 | wire_type)
    return head + (varint(len(payload)) + payload if wire_type == 2 else payload)


def request_of_spans(*spans: bytes) -> bytes:
    """An ExportTraceServiceRequest around serialized (or spliced) Span messages."""
    scope = b"".join(field(2, 2, span) for span in spans)
    return field(1, 2, field(2, 2, scope))


# --- hypothesis: OTLP content as producers send it ------------------------------------------------------

ids = st.one_of(
    st.binary(min_size=16, max_size=16), st.just(b""), st.just(b"\0" * 16), st.binary(min_size=1, max_size=20))
span_ids = st.one_of(
    st.binary(min_size=8, max_size=8), st.just(b""), st.just(b"\0" * 8), st.binary(min_size=1, max_size=10))
text = st.text(max_size=40)
keys = st.sampled_from(["gen_ai.request.model", "gen_ai.usage.input_tokens", "k", "", "ü.key"]) | text


def _leaf(draw: Any) -> AnyValue:
    which = draw(st.sampled_from(["string", "bool", "int", "double", "bytes", "unset", "strindex", "empty_string"]))
    value = AnyValue()
    if which == "string":
        value.string_value = draw(text)
    elif which == "empty_string":
        value.string_value = ""
        value.ClearField("string_value")
        value.string_value = ""  # set explicitly: the oneof holds an empty string
    elif which == "bool":
        value.bool_value = draw(st.booleans())
    elif which == "int":
        value.int_value = draw(st.integers(-(2**63), 2**63 - 1))
    elif which == "double":
        value.double_value = draw(st.floats(allow_nan=False))
    elif which == "bytes":
        value.bytes_value = draw(st.binary(max_size=12))
    elif which == "strindex" and "string_value_strindex" in AnyValue.DESCRIPTOR.fields_by_name:
        value.string_value_strindex = draw(st.integers(0, 100))
    return value


@st.composite
def any_values(draw: Any, depth: int = 0) -> AnyValue:
    if depth >= 3 or draw(st.integers(0, 3)):
        return _leaf(draw)
    value = AnyValue()
    if draw(st.booleans()):
        value.array_value.SetInParent()
        for _ in range(draw(st.integers(0, 3))):
            value.array_value.values.add().CopyFrom(draw(any_values(depth + 1)))
    else:
        value.kvlist_value.SetInParent()
        for _ in range(draw(st.integers(0, 3))):
            pair = value.kvlist_value.values.add(key=draw(keys))
            pair.value.CopyFrom(draw(any_values(depth + 1)))
    return value


@st.composite
def key_values(draw: Any) -> List[KeyValue]:
    pairs = []
    for _ in range(draw(st.integers(0, 5))):
        pair = KeyValue(key=draw(keys))
        if draw(st.integers(0, 6)):  # now and then a pair without a value
            pair.value.CopyFrom(draw(any_values()))
        pairs.append(pair)
    return pairs


@st.composite
def spans(draw: Any) -> Span:
    span = Span(trace_id=draw(ids), span_id=draw(span_ids), parent_span_id=draw(span_ids), name=draw(text),
                kind=draw(st.integers(0, 7)), start_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
                end_time_unix_nano=draw(st.sampled_from([0, 1, 2**63, 2**64 - 1])),
                trace_state=draw(st.sampled_from(["", "a=b"])))  # fmt: skip
    span.attributes.extend(draw(key_values()))
    for _ in range(draw(st.integers(0, 2))):
        event = span.events.add(name=draw(text), time_unix_nano=draw(st.integers(0, 2**64 - 1)))
        event.attributes.extend(draw(key_values()))
    if draw(st.booleans()):
        span.status.code = draw(st.integers(0, 4))  # type: ignore[assignment]
        span.status.message = draw(text)
    if draw(st.integers(0, 4)) == 0:
        span.links.add(trace_id=draw(ids), span_id=draw(span_ids)).attributes.extend(draw(key_values()))
    return span


@st.composite
def requests(draw: Any) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 3))):
        resource_spans: ResourceSpans = request.resource_spans.add(schema_url=draw(st.sampled_from(["", "s"])))
        if draw(st.booleans()):
            resource_spans.resource.attributes.extend(draw(key_values()))
        for _ in range(draw(st.integers(0, 3))):
            scope_spans: ScopeSpans = resource_spans.scope_spans.add()
            if draw(st.booleans()):
                scope_spans.scope.name = draw(text)
                scope_spans.scope.version = draw(text)
            for _ in range(draw(st.integers(0, 4))):
                scope_spans.spans.add().CopyFrom(draw(spans()))
    return request


@PROFILE
@given(requests())
def test_what_producers_send_reads_alike(request: ExportTraceServiceRequest) -> None:
    assert_read_alike(request.SerializeToString())


@PROFILE
@given(requests(), requests())
def test_two_requests_concatenated_merge_alike(first: ExportTraceServiceRequest, second: ExportTraceServiceRequest) -> None:
    assert_read_alike(first.SerializeToString() + second.SerializeToString())


@PROFILE
@given(spans(), spans(), key_values(), any_values(), any_values())
def test_messages_sent_twice_merge_alike(first: Span, second: Span, pairs: List[KeyValue], one: AnyValue,
                                         two: AnyValue) -> None:  # fmt: skip
    """A span spliced from two (the later scalar wins, repeated fields add up, the status merges), and a
    KeyValue whose value comes twice (a oneof's last member wins; two arrays or two kvlists merge)."""
    twice = KeyValue(key="twice").SerializeToString() + field(2, 2, one.SerializeToString()) \
        + field(2, 2, two.SerializeToString())  # fmt: skip
    spliced = first.SerializeToString() + second.SerializeToString() + field(9, 2, twice)
    for pair in pairs:
        spliced += field(9, 2, pair.SerializeToString())
    assert_read_alike(request_of_spans(spliced))


@PROFILE
@given(requests(), st.data())
def test_mutated_bodies_are_read_alike_or_refused(request: ExportTraceServiceRequest, data: Any) -> None:
    body = bytearray(request.SerializeToString())
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    for _ in range(data.draw(st.integers(1, 4))):
        action = rng.randrange(4)
        if action == 0 and body:
            body[rng.randrange(len(body))] = rng.randrange(256)
        elif action == 1 and body:
            del body[rng.randrange(len(body)):][: rng.randrange(1, 6)]
        elif action == 2:
            at = rng.randrange(len(body) + 1)
            body[at:at] = rng.randbytes(rng.randrange(1, 6))
        else:
            body = body[: rng.randrange(len(body) + 1)]
    reference = upb(bytes(body))
    try:
        read = fast(bytes(body))  # WireError is caught there: anything else fails the test
    except Exception as error:  # pragma: no cover - the assertion says what happened
        raise AssertionError(f"{type(error).__name__} on a mutated body: {error}") from error
    if reference is not None:
        assert read == reference


def test_sdk_spans_read_alike(sdk: Tuple[List[Any], List[Any]]) -> None:  # noqa: F811
    assert_read_alike(encode_spans(sdk[0]).SerializeToString())


def test_fields_in_any_order_and_unknown_fields_of_every_wire_type() -> None:
    model = KeyValue(key="gen_ai.request.model", value=AnyValue(string_value="gpt-4o")).SerializeToString()
    group = field(99, 3, field(1, 0, varint(7)) + field(2, 3, field(3, 5, b"abcd") + field(2, 4)) + field(99, 4))
    unknown = field(98, 0, varint(2**64 - 1)) + field(97, 1, b"12345678") + field(96, 2, b"\xff\xfe") \
        + field(95, 5, b"1234") + group  # fmt: skip
    wrong_type = field(5, 0, varint(3)) + field(9, 0, varint(1)) + field(7, 2, b"12345678")  # known numbers
    span = (field(15, 2, field(3, 0, varint(2)) + unknown + field(2, 2, b"failed")) + field(9, 2, unknown + model)
            + field(5, 2, b"chat") + unknown + wrong_type + field(2, 2, b"\x02" * 8) + field(1, 2, b"\x01" * 16)
            + field(7, 1, (5).to_bytes(8, "little")))  # fmt: skip
    scope = field(2, 2, span) + field(1, 2, field(1, 2, b"late.scope") + unknown) + unknown
    resource = field(1, 2, field(1, 2, field(1, 2, b"service.name") + field(2, 2, field(1, 2, b"svc"))))
    body = field(1, 2, field(2, 2, scope) + unknown + resource) + unknown
    assert_read_alike(body)
    (view,), invalid = wire.span_views(body, decode.MAX_STRING_CHARS)
    assert invalid == 0
    assert (view.name, view.status_code, view.status_message, view.scope_name, view.start_ns, view.end_ns) == \
        ("chat", "ERROR", "failed", "late.scope", 5, 5)  # fmt: skip
    assert view.attributes == {"gen_ai.request.model": "gpt-4o"} and view.resource == {"service.name": "svc"}


def _nested_arrays(levels: int) -> bytes:
    """A span whose attribute is an array in an array ... ``levels`` deep, written on the wire (the message
    classes refuse to build what they could not parse)."""
    value = field(3, 0, varint(1))  # AnyValue(int_value=1)
    for _ in range(levels):
        value = field(5, 2, field(1, 2, value))  # AnyValue(array_value=ArrayValue(values=[value]))
    pair = field(1, 2, b"deep") + field(2, 2, value)
    return request_of_spans(field(1, 2, b"\x01" * 16) + field(2, 2, b"\x02" * 8) + field(9, 2, pair))


def test_nesting_is_limited_where_the_protobuf_runtime_limits_it() -> None:
    accepted = [levels for levels in range(40, 60) if upb(_nested_arrays(levels)) is not None]
    assert accepted and max(accepted) < 59, "upb's limit moved: find it again"
    deepest = max(accepted)
    assert_read_alike(_nested_arrays(deepest))
    with pytest.raises(wire.WireError):
        wire.span_views(_nested_arrays(deepest + 1), decode.MAX_STRING_CHARS)
    with pytest.raises(wire.WireError):  # and no recursion limit of Python's is reached on the way
        wire.span_views(_nested_arrays(5000), decode.MAX_STRING_CHARS)


@pytest.mark.parametrize(
    "body",
    [
        request_of_spans(field(5, 2, b"\xff\xfe")),  # a name that is not UTF-8
        request_of_spans(field(9, 2, field(1, 2, b"\xed\xa0\x80"))),  # a key holding a lone surrogate
        request_of_spans(field(9, 2, field(2, 2, field(1, 2, b"ok\xc3")))),  # a value cut mid-character
        request_of_spans(field(9, 2, b"\x0a\x05ab")),  # a key longer than its message
        field(1, 2, b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),  # an 11-byte varint length
        b"\x0b",  # a group that never ends
        b"\x0c",  # the end of a group that never began
        b"\x0e\x00",  # wire type 6
        b"\x00\x01",  # field number 0
        request_of_spans(field(7, 1, b"1234")),  # a fixed64 cut short
    ],
)
def test_malformed_bodies_are_refused_by_both(body: bytes) -> None:
    assert upb(body) is None
    with pytest.raises(wire.WireError):
        wire.span_views(body, decode.MAX_STRING_CHARS)
    with pytest.raises(decode.DecodeError):
        decode.protobuf_span_views(body)


def test_long_strings_are_cut_as_the_protobuf_path_cuts_them() -> None:
    span = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    span.attributes.add(key="long").value.string_value = "é" * 100
    span.attributes.add(key="list").value.array_value.values.add().string_value = "x" * 100
    body = request_of_spans(span.SerializeToString())
    (view,), _ = wire.span_views(body, 10)
    assert view.attributes == {"long": "é" * 10, "list": ("x" * 10,)}
    assert_read_alike(body)


def test_the_receiver_uses_it() -> None:
    assert decode._wire is wire
    span = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="chat")
    views, invalid = decode.protobuf_span_views(request_of_spans(span.SerializeToString()))
    assert [view.name for view in views] == ["chat"] and invalid == 0


def test_ascii_attribute_keys_come_back_interned() -> None:
    """Keys are decoded once and then found by their bytes: the interned str, the very object the mapping's
    constant keys are (so lookups downstream are identity tests); non-ASCII keys are decoded every time."""
    span = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    for key in ("gen_ai.request.model", "clé", ""):
        span.attributes.add(key=key).value.string_value = "v"
    body = request_of_spans(span.SerializeToString())
    (first,), _ = wire.span_views(body, decode.MAX_STRING_CHARS)
    (second,), _ = wire.span_views(body, decode.MAX_STRING_CHARS)
    again = dict(zip(first.attributes, second.attributes))  # each key of the first read -> the second's
    model = next(key for key in first.attributes if key == "gen_ai.request.model")
    assert model is again[model] is sys.intern("gen_ai.request.model")
    assert again["clé"] == "clé"
    assert first.attributes == second.attributes == {"gen_ai.request.model": "v", "clé": "v", "": "v"}


@pytest.mark.parametrize("size", [0, 1, 126, 127, 128, 129, 300, 16_384])
def test_lengths_and_tags_either_side_of_their_one_byte_form_read_alike(size: int) -> None:
    """The decoder reads one-byte tags (fields 1-15) and lengths (under 128) inline and the rest out of
    line: strings either side of 128 bytes, an unknown field 16 (a two-byte tag) and lengths that claim
    one byte more than the body holds are read, skipped and refused as the protobuf runtime does."""
    value = field(1, 2, b"v" * size)  # AnyValue.string_value
    pair = field(1, 2, b"k" * size) + field(2, 2, value)
    span = field(1, 2, b"\x11" * 16) + field(2, 2, b"\x22" * 8) + field(16, 0, varint(7)) + field(9, 2, pair)
    body = request_of_spans(span)
    assert_read_alike(body)
    views, invalid = wire.span_views(body, decode.MAX_STRING_CHARS)
    assert invalid == 0 and views[0].attributes == {"k" * size: "v" * size}
    cut = body[:-1]  # every enclosing length now claims one byte more than there is
    assert upb(cut) is None and fast(cut) is None
