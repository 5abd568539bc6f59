"""The public API is what ``__all__`` says, in every package that has one: nothing public missing, nothing stale."""

from __future__ import annotations

import importlib
import types

import pytest

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
