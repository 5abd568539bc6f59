"""Turning whatever an attribute holds into what a record field needs.

Producers send the wrong types, negative counts, bytes that are not UTF-8 and
JSON that does not parse. Every helper here returns a sane value or None and
reports what it repaired, never raises.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

MAX_JSON_DEPTH = 20
_SURROGATE = re.compile("[\ud800-\udfff]")
_FIRST_NON_BLANK = re.compile(r"\S")


def first(attrs: Mapping[str, Any], keys: Iterable[str]) -> Any:
    """The value of the first key present and not empty: the ordered lookup."""
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


def content(value: Any) -> str:
    """Message content as text: like :func:`text` but never copies a clean string (content can be large)."""
    if isinstance(value, str):
        return repair(value) if value and not value.isspace() else ""
    return text(value) or ""


class KeyPlan(NamedTuple):
    """What one set of attribute keys holds for the mapping, worked out once per set."""

    single: Tuple[Tuple[str, str], ...]
    """(field, key) for every field with exactly one of its source keys present (most fields of most spans)."""
    fields: Tuple[Tuple[str, Tuple[str, ...]], ...]
    """(field, its source keys present, in priority order) for every field with several present."""
    named: Tuple[Tuple[str, str], ...]
    """(key, name) for the present keys of ``Lookup(names=...)``."""
    prefixed: Tuple[Tuple[str, str], ...]
    """(key, key without its prefix) for the present keys under ``Lookup(prefixes=...)``."""


class Lookup:
    """Field → source keys in priority order, resolved through a plan per set of attribute keys.

    Spans from one instrumentation carry the same keys, span after span, so
    which keys feed which field (and which are request parameters or user
    metadata) is worked out once per distinct key set and cached; a span then
    costs one lookup of its key tuple and a read per field it has.
    """

    _MAX_PLANS = 1024

    def __init__(
        self,
        sources: Mapping[str, Sequence[str]],
        names: Optional[Mapping[str, str]] = None,
        prefixes: Tuple[str, ...] = (),
        exclude: Iterable[str] = (),
    ) -> None:
        self.sources = dict(sources)
        self._names = dict(names or {})
        self._prefixes = prefixes
        self._exclude = frozenset(exclude)
        self._plans: Dict[Tuple[str, ...], KeyPlan] = {}

    def plan(self, attributes: Dict[str, Any]) -> KeyPlan:
        keys = tuple(attributes)
        plans: Dict[Tuple[str, ...], KeyPlan] = self._plans  # annotated: compiled, the dict's own get
        plan = plans.get(keys)
        if plan is None:
            plan = self._make_plan(keys)
            if len(self._plans) >= self._MAX_PLANS:  # key sets that vary per span (indexed messages, user keys)
                self._plans.clear()
            self._plans[keys] = plan
        return plan

    def _make_plan(self, keys: Tuple[str, ...]) -> KeyPlan:
        present = set(keys)
        every = [(field, tuple(key for key in sources if key in present)) for field, sources in self.sources.items()]
        single = tuple((field, found[0]) for field, found in every if len(found) == 1)
        fields = tuple((field, found) for field, found in every if len(found) > 1)
        named = tuple((key, self._names[key]) for key in keys if key in self._names)
        prefixed = []
        if self._prefixes:
            for key in keys:
                if isinstance(key, str) and key.startswith(self._prefixes) and key not in self._exclude:
                    prefix = next(p for p in self._prefixes if key.startswith(p))
                    prefixed.append((key, key[len(prefix):]))
        return KeyPlan(single, fields, named, tuple(prefixed))

    def resolve(self, attributes: Dict[str, Any], plan: Optional[KeyPlan] = None) -> Dict[str, Any]:
        """Field → the value of its first source key present and not empty (``attributes``: a span's, a dict)."""
        plan = plan or self.plan(attributes)
        # One source present: taken in one comprehension, the rare empty values dropped after (C-level scans).
        found: Dict[str, Any] = {field: attributes[key] for field, key in plan.single}
        for value in found.values():
            # Identity and type tests: ``"" in values`` compares every number with a string, the dearer test.
            if value is None or (isinstance(value, str) and not value):
                found = {field: value for field, value in found.items() if value is not None and value != ""}
                break
        for field, keys in plan.fields:
            for key in keys:
                value = attributes[key]
                if value is not None and value != "":
                    found[field] = value
                    break
        return found


def indexed_rows(attributes: Mapping[str, Any], prefix: str, separator: str = ".") -> List[Dict[str, Any]]:
    """``{prefix}{i}{separator}{field}`` attributes grouped by numeric ``i``, in index order.

    OpenLLMetry (``gen_ai.prompt.0.role``) and OpenInference
    (``llm.input_messages.0.message.role``) flatten message lists this way;
    non-numeric indexes (``gen_ai.prompt.name``) are not rows.
    """
    rows: Dict[int, Dict[str, Any]] = {}
    for key, value in attributes.items():
        if key.startswith(prefix):
            index, _, field = key[len(prefix):].partition(separator)
            if index.isdigit() and field:
                rows.setdefault(int(index), {})[field] = value
    return [rows[index] for index in sorted(rows)]


def text(value: Any) -> Optional[str]:
    """A clean string from an attribute value, None if there is nothing.

    Bytes are decoded as UTF-8 with replacement; lone surrogates (what a
    bad decode leaves in a str) become U+FFFD so the record can be encoded.
    """
    if value is None:
        return None
    if type(value) is str:
        clean: str = value  # annotated: compiled, the str methods are called directly
        if clean.isascii():  # the common case, kept cheap
            return clean.strip() or None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif not isinstance(value, str):
        if isinstance(value, (list, tuple)):
            return ", ".join(filter(None, (text(item) for item in value))) or None
        value = str(value)
    value = repair(value)
    value = value.strip()
    return value or None


def repair(value: str) -> str:
    """``value`` with anything UTF-8 cannot encode replaced, cheaply when it is clean."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", value)


def count(value: Any, field: str, warnings: List[str]) -> Optional[int]:
    """A non-negative token count, or None with a warning saying why it was dropped."""
    if type(value) is int and value >= 0:  # the common case, kept cheap
        return value
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (bytes, str)):
        raw = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        try:
            value = float(raw.strip())
        except ValueError:
            warnings.append(f"{field}: not a number ({raw[:40]!r}), dropped")
            return None
    if isinstance(value, (list, tuple)):
        warnings.append(f"{field}: array instead of a number, dropped")
        return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        warnings.append(f"{field}: not a finite number, dropped")
        return None
    if value < 0:
        warnings.append(f"{field}: negative ({value}), dropped")
        return None
    if isinstance(value, float) and not value.is_integer():
        warnings.append(f"{field}: fractional ({value}), rounded")
    return int(round(value))


def number(value: Any) -> Optional[float]:
    """A finite float from a number or numeric string, else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def parse_json(value: Any) -> Any:
    """Structured data from a JSON string (or bytes); other values pass through; bad JSON gives None."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        document: str = value  # annotated: compiled, str operations are called directly
        first = document[:1]
        if first not in ("[", "{", '"'):
            # Look at the first non-blank character without copying a possibly large string.
            start = _FIRST_NON_BLANK.search(value) if first.isspace() else None
            if start is None or value[start.start()] not in "[{\"":
                return None
        try:
            return _loads(value)
        except (ValueError, RecursionError):  # nesting deeper than the interpreter's stack
            return None
    return value


try:  # message JSON is parsed for every span with content; orjson does it ~5x faster
    import orjson

    def _loads(value: str) -> Any:
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:  # lone surrogates, NaN, very deep nesting: the stdlib decides
            return json.loads(value)

except ImportError:  # pragma: no cover
    _loads = json.loads


def json_safe(value: Any, depth: int = 0) -> Any:
    """Something ``json.dumps`` accepts whatever OTel or a user put in an attribute."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return repair(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if depth >= MAX_JSON_DEPTH:
        return "…"
    if isinstance(value, (dict, Mapping)):
        return {repair(str(key)): json_safe(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(item, depth + 1) for item in value]
    return repair(str(value))


TRUNCATION_MARKER = "…[truncated {total} bytes]"


def truncate(value: str, max_bytes: int) -> str:
    """``value`` cut to ``max_bytes`` of UTF-8 plus a marker, never inside a character."""
    if len(value) * 4 <= max_bytes:  # no character takes more than 4 bytes: surely fits
        return value
    encoded = value.encode("utf-8")
    if len(encoded) <= max_bytes:
        return value
    # errors="ignore" drops the partial character the byte cut may leave at the end.
    return encoded[:max_bytes].decode("utf-8", "ignore") + TRUNCATION_MARKER.format(total=len(encoded))


def strings(value: Any) -> List[str]:
    """A list of strings from an array attribute, a JSON array string, or one string."""
    if value is None:
        return []
    if isinstance(value, str):
        parsed = parse_json(value) if value.startswith("[") else None
        if isinstance(parsed, list):
            value = parsed
        else:
            return [value]
    if isinstance(value, Sequence) and not isinstance(value, (bytes, str)):
        return [item for item in (text(v) for v in value) if item]
    single = text(value)
    return [single] if single else []
