"""The storage checks take a shortcut for bodies orjson parsed; it must give the same reasons as the full walk."""

from __future__ import annotations

import json
from typing import Any, Dict

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from promptwall_otel.backend.checks import MAX_COST_USD, MAX_COUNT, MAX_TEXT_CHARS, storage_errors
from promptwall_otel.backend.server import parse_body

# Integers past 64 bits, which orjson would round to floats, and strings with long digit runs (hex ids),
# which send parse_body looking for such numbers.
_numbers = st.one_of(st.integers(-(10**17), 10**17), st.floats(allow_nan=False, allow_infinity=False),
                     st.integers(-(10**30), 10**30),
                     st.sampled_from([MAX_COUNT, MAX_COUNT + 1, -MAX_COUNT - 1, MAX_COST_USD, MAX_COST_USD * 2, 10**16,
                                      2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 1e19, -1e19]))
_scalars = st.one_of(st.none(), st.booleans(), _numbers, st.text(max_size=4),
                     st.sampled_from(["x" * (MAX_TEXT_CHARS + 1), "gen-" + "1234567890" * 2 + "abc"]))  # fmt: skip
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                           max_size=3), max_leaves=12)
_keys = st.sampled_from(["prompt", "answer", "prompt_tokens", "completion_tokens", "total_tokens", "latency_ms",
                         "cost_usd", "metadata", "spans", "policy_hits", "other"])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _json, max_size=6), st.integers(0, 40))
def test_orjson_shortcut_gives_the_full_walks_reasons(event: Dict[str, Any], depth: int) -> None:
    nested: Any = 1
    for _ in range(depth):
        nested = [nested]
    event["metadata"] = {"deep": nested} if depth % 2 else event.get("metadata")
    body = json.dumps(event).encode()
    parsed, strict = parse_body(body)
    full = storage_errors(json.loads(body), strict_json=False)
    assert storage_errors(parsed, strict_json=strict) == full
    if strict:  # what orjson gave is what the standard library reads: no integer was rounded
        assert parsed == orjson.loads(body) == json.loads(body)
