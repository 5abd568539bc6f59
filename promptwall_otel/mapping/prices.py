"""The dated price table behind ``cost_usd`` when a span carries no cost.

Lookup order and sources are in ``docs/prices.md``. An unknown model gets no
cost: a guessed price would be a wrong bill that looks right.
"""

from __future__ import annotations

import json
import logging
import re
from importlib import resources
from typing import Any, Dict, Mapping, Optional, Tuple

logger = logging.getLogger("promptwall_otel")

_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")
_UNIT = "USD per 1,000,000 tokens"


class PriceTable:
    """Per-model prices in USD per 1M tokens: ``input``, ``output``, ``cached_input``, ``cache_write``.

    Each entry names its ``source`` (a key of ``sources``, which says where the
    prices were read and their date). Reasoning tokens are output tokens and
    are priced as such (every producer counts them in the output, and the
    mapping adds them when one did not); cache reads and writes have their
    own prices, else the input price.
    """

    def __init__(self, models: Mapping[str, Mapping[str, Any]], version: str = "", source: str = "",
                 sources: Optional[Mapping[str, Mapping[str, str]]] = None) -> None:  # fmt: skip
        self.models = {key.lower(): dict(value) for key, value in models.items()}
        self.version = version
        self.source = source
        self.sources = dict(sources or {})
        self.label = f"price_table@{version}"
        """What records say in ``metadata.gen_ai.cost_source`` when the cost came from this table."""
        # Longest keys first, so the prefix fallback finds the most specific entry.
        self._by_length = sorted(self.models, key=len, reverse=True)
        self._cache: Dict[str, Optional[Dict[str, Any]]] = {}
        self._rates: Dict[str, Tuple[float, ...]] = {}

    @classmethod
    def load(cls, override_path: Optional[str] = None) -> "PriceTable":
        """The shipped table, with a user's file of the same format merged over it."""
        shipped = json.loads(resources.files(__package__).joinpath("prices.json").read_text("utf-8"))
        models = dict(shipped["models"])
        version = shipped.get("version", "")
        source = shipped.get("source", "")
        sources = dict(shipped.get("sources", {}))
        if override_path:
            try:
                with open(override_path, encoding="utf-8") as handle:
                    override = json.load(handle)
                if override.get("unit", _UNIT) != _UNIT:
                    raise ValueError(f"unit must be {_UNIT!r}")
                models.update(override["models"])
                sources.update(override.get("sources", {}))
                version = f"{version}+{override.get('version', 'custom')}"
                source = f"{source}; overridden by {override_path}"
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("price file %s not used (%s); using the shipped table", override_path, exc)
        return cls(models, version, source, sources)

    def source_of(self, model: str) -> Optional[str]:
        """Where ``model``'s prices come from and their date (``"… (2026-11-20)"``); None if unknown."""
        prices = self.lookup(model)
        if prices is None:
            return None
        name = prices.get("source")
        found = self.sources.get(name) if isinstance(name, str) else None
        if found:
            return f"{found.get('what', name)} ({found.get('date', 'undated')})"
        return str(name) if name else self.source or None

    def lookup(self, model: str) -> Optional[Dict[str, Any]]:
        """Prices for ``model``: exact, date suffix dropped, provider prefix dropped, longest ``-`` prefix."""
        key = model.strip().lower()
        if key in self._cache:
            return self._cache[key]
        found = self._find(key)
        if len(self._cache) < 4096:
            self._cache[key] = found
        return found

    def _find(self, key: str) -> Optional[Dict[str, Any]]:
        candidates = [key]
        if "/" in key:
            candidates.append(key.rsplit("/", 1)[1])
        for candidate in candidates:
            for name in (candidate, _DATE_SUFFIX.sub("", candidate)):
                if name in self.models:
                    return self.models[name]
        for candidate in candidates:
            for name in self._by_length:
                if candidate.startswith(name + "-"):
                    return self.models[name]
        return None

    def cost(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> Optional[float]:
        """USD for one call, cache-aware; None if the model is unknown.

        ``prompt_tokens`` includes the cached ones (semconv >= 1.40); tokens in
        a cache bucket without its own price are charged at the input price.
        """
        rates = self._rates.get(model)
        if rates is None:
            rates = self._rates_of(model)
        if not rates:
            return None
        input_price, cached_price, write_price, output_price = rates
        if cache_read_tokens or cache_write_tokens:
            cache_read = min(cache_read_tokens, prompt_tokens)
            cache_write = min(cache_write_tokens, prompt_tokens - cache_read)
        else:
            cache_read = cache_write = 0
        uncached = prompt_tokens - cache_read - cache_write
        total = uncached * input_price + cache_read * cached_price + cache_write * write_price + completion_tokens * output_price
        return round(total / 1_000_000, 10)

    def _rates_of(self, model: str) -> Tuple[float, ...]:
        """(input, cached input, cache write, output) for ``model`` as spelled in the span; () if unknown."""
        prices = self.lookup(model)
        if prices is None:
            rates: Tuple[float, ...] = ()
        else:
            input_price = prices.get("input", 0.0)
            rates = (input_price, prices.get("cached_input", input_price), prices.get("cache_write", input_price),
                     prices.get("output", 0.0))  # fmt: skip
        if len(self._rates) < 4096:
            self._rates[model] = rates
        return rates


_default: Optional[PriceTable] = None


def default_table() -> PriceTable:
    """The shipped table, loaded once."""
    global _default
    if _default is None:
        _default = PriceTable.load()
    return _default

