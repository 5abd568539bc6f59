"""The public API is what ``__all__`` says, in every package that has one: nothing public missing, nothing stale."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import types

import pytest

from promptwall_otel.backend import LocalBackend
from tests.conftest import API_KEY, ROOT

PACKAGES = ["promptwall_otel", "promptwall_otel.mapping", "promptwall_otel.transport", "promptwall_otel.backend",
            "promptwall_otel.receiver"]  # fmt: skip


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_complete(name: str) -> None:
    package = importlib.import_module(name)
    exported = set(package.__all__)
    assert len(exported) == len(package.__all__), "a name is listed twice"
    assert all(hasattr(package, item) for item in exported), exported - set(dir(package))
    public = {item for item, value in vars(package).items()
              if not item.startswith("_") and not isinstance(value, types.ModuleType)
              and getattr(value, "__module__", name).startswith("promptwall_otel")}  # fmt: skip
    assert public <= exported, f"{name} exposes names missing from __all__: {public - exported}"


def test_the_exporter_imports_no_server_library(backend: LocalBackend) -> None:
    """The exporter-only install has no protobuf, gRPC, uvicorn or jinja2: a span sent in code and the zero-code
    entry points must not import them (they are the ``server`` extra's, for the receiver and the backend)."""
    script = f"""
import sys
from opentelemetry.sdk.trace import TracerProvider
import promptwall_otel, promptwall_otel.zerocode
provider = TracerProvider()
processor = promptwall_otel.configure(tracer_provider=provider, api_key={API_KEY!r}, base_url={backend.url!r}, spool=False)
with provider.get_tracer("t").start_as_current_span("chat m", attributes={{"gen_ai.operation.name": "chat",
        "gen_ai.request.model": "m", "gen_ai.usage.input_tokens": 1, "gen_ai.usage.output_tokens": 1}}):
    pass
provider.shutdown()
assert processor.stats()["exported"] == 1, processor.stats()
print(sorted(m for m in ("grpc", "google.protobuf", "uvicorn", "jinja2", "opentelemetry.proto") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
