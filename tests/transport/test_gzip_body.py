"""The request bodies the sending client gzips read back as sent, whichever deflate is installed."""

from __future__ import annotations

import gzip
import importlib
import json
import os

import pytest

from promptwall_otel.transport import http as transport_http
from promptwall_otel.transport.encoding import body_of


def _records(n: int) -> list:
    return [json.dumps({"request_id": f"gen-{i}", "prompt": os.urandom(300).hex() + "é" * 50}).encode() for i in range(n)]


@pytest.mark.parametrize("payload", [b"", b'{"events":[]}', body_of(_records(1)), body_of(_records(500))])
def test_gzip_body_round_trips_through_the_stdlib(payload: bytes) -> None:
    body = transport_http.gzip_body(payload)
    assert body[:2] == b"\x1f\x8b"  # a gzip member, which any Content-Encoding: gzip server reads
    assert gzip.decompress(body) == payload


def test_the_server_extra_brings_isal_and_the_client_uses_it() -> None:
    importlib.import_module("isal")  # in the server extra, which the tests install
    assert transport_http.gzip_body.__doc__ and "ISA-L" in transport_http.gzip_body.__doc__
