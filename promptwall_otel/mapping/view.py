"""One neutral view of a finished span and of a log record, whatever carried it.

An SDK ``ReadableSpan`` in-process and an OTLP protobuf span in the receiver
become the same :class:`SpanView`, so there is exactly one mapping to get
right. Ids are ints, times are nanoseconds since the epoch, attribute values
are what OTel allows (str, bool, int, float, bytes and sequences of those).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

__all__ = ["SpanView", "EventView", "LogView", "attributes_of", "from_readable_span", "from_sdk_log"]

_EMPTY: Mapping[str, Any] = {}


class EventView:
    """A span event: name, time and attributes."""

    __slots__ = ("name", "time_ns", "attributes")

    def __init__(self, name: str, time_ns: int = 0, attributes: Optional[Mapping[str, Any]] = None) -> None:
        self.name = name
        self.time_ns = time_ns
        self.attributes = attributes or _EMPTY


class LogView:
    """A log record that may carry GenAI content for the span it points at."""

    __slots__ = ("trace_id", "span_id", "event_name", "body", "attributes", "time_ns")

    def __init__(
        self,
        trace_id: int,
        span_id: int,
        event_name: Optional[str],
        body: Any = None,
        attributes: Optional[Mapping[str, Any]] = None,
        time_ns: int = 0,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.event_name = event_name
        self.body = body
        self.attributes = attributes or _EMPTY
        self.time_ns = time_ns

    def __repr__(self) -> str:
        return f"LogView(event_name={self.event_name!r}, span_id={self.span_id:016x})"


class SpanView:
    """What the mapping needs from a finished span, and nothing else.

    ``attributes`` is a plain ``dict`` (a copy of any other mapping given): the compiled mapping reads it
    with the dict's own operations, not the generic mapping protocol.
    """

    __slots__ = (
        "name", "kind", "trace_id", "span_id", "parent_span_id", "start_ns", "end_ns",
        "status_code", "status_message", "attributes", "events", "resource", "scope_name", "scope_version",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        start_ns: int,
        end_ns: int,
        attributes: Mapping[str, Any],
        parent_span_id: Optional[int] = None,
        kind: str = "INTERNAL",
        status_code: str = "UNSET",
        status_message: Optional[str] = None,
        events: Sequence[EventView] = (),
        resource: Optional[Mapping[str, Any]] = None,
        scope_name: str = "",
        scope_version: Optional[str] = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.status_code = status_code
        self.status_message = status_message
        self.attributes = attributes if type(attributes) is dict else dict(attributes)
        self.events = events
        self.resource = resource or _EMPTY
        self.scope_name = scope_name
        self.scope_version = scope_version

    def __repr__(self) -> str:
        return f"SpanView(name={self.name!r}, trace_id={self.trace_id:032x}, span_id={self.span_id:016x})"


_resource_dicts: Dict[int, Tuple[Any, Dict[str, Any]]] = {}
_last_resource: Tuple[Any, Mapping[str, Any]] = (None, _EMPTY)
"""The resource seen last and its dict (one tuple, swapped whole): most processes have one resource."""


def resource_dict(resource: Any) -> Mapping[str, Any]:
    """A resource's attributes as one shared plain dict per resource object.

    Every span of a provider carries the same resource; sharing the dict lets
    the builder cache what it derives from it (integration id, metadata).
    """
    global _last_resource
    last = _last_resource
    if last[0] is resource:
        return last[1]
    if resource is None:
        return _EMPTY
    cached = _resource_dicts.get(id(resource))
    if cached is None or cached[0] is not resource:
        if len(_resource_dicts) >= 64:
            _resource_dicts.clear()
        cached = _resource_dicts[id(resource)] = (resource, dict(resource.attributes))
    _last_resource = cached
    return cached[1]


def attributes_of(span: Any) -> Mapping[str, Any]:
    """An SDK span's attribute dict itself when the SDK exposes it, else the public read-only view.

    ``span.attributes`` wraps the SDK's bounded mapping in a proxy whose
    iteration is Python code: one set test per span costs ~1.3 µs through it
    and ~0.25 µs on the underlying dict, and every lookup is slower too
    (benchmarks/README.md). An ended span's attributes no longer change.
    """
    raw = getattr(getattr(span, "_attributes", None), "_dict", None)
    return raw if isinstance(raw, dict) else (span.attributes or _EMPTY)


def _name_of(member: Any) -> str:
    """``member.name`` of an SDK enum (``SpanKind``, ``StatusCode``), read as the ``_name_`` the enum stores:
    ``Enum.name`` is a Python-level property, and hashing a member to memoise it runs Python code too."""
    name = getattr(member, "_name_", None)
    return name if type(name) is str else member.name


def _events_of(span: Any) -> Any:
    """The span's events without the public property's locked copy, when the SDK exposes its deque."""
    raw = getattr(getattr(span, "_events", None), "_dq", None)
    return raw if raw is not None else span.events


_SPAN_PROPERTIES = ("name", "context", "kind", "parent", "start_time", "end_time", "status", "resource",
                    "instrumentation_scope")  # fmt: skip
_sdk_types: Tuple[Any, ...] = ()
"""(ReadableSpan, SpanContext, Status), imported when the first SDK span is viewed (the mapping imports no
OpenTelemetry package otherwise)."""
_plain_span_classes: Dict[type, bool] = {}


def _stores_as_sdk(span: Any) -> bool:
    """Whether spans of ``span``'s class answer every property read here with the SDK ``ReadableSpan``'s own, which
    returns its field as stored: then the fields are read directly. Each property is a Python-level call,
    as are ``SpanContext.trace_id``, ``Status.status_code`` and ``InstrumentationScope.name``: together
    about a third of viewing a span. A subclass that overrides any of them is read through them."""
    global _sdk_types
    cls = type(span)
    known = _plain_span_classes.get(cls)
    if known is None:
        try:
            from opentelemetry.sdk.trace import ReadableSpan
            from opentelemetry.trace import SpanContext, Status
        except ImportError:  # pragma: no cover - the SDK is a dependency; a span from elsewhere is read as any
            known = False
        else:
            # The private fields read directly must exist too (checked once, on the first span of the class): an
            # SDK release that renames them is then read through its properties, never fails.
            known = issubclass(cls, ReadableSpan) and all(
                getattr(cls, name, None) is getattr(ReadableSpan, name) and hasattr(span, "_" + name)
                for name in _SPAN_PROPERTIES)  # fmt: skip
            status = Status()
            _sdk_types = (ReadableSpan, SpanContext,
                          Status if hasattr(status, "_status_code") and hasattr(status, "_description") else None)
        if len(_plain_span_classes) < 64:
            _plain_span_classes[cls] = known
    return known


_scopes: Dict[int, Tuple[Any, str, Optional[str]]] = {}
_last_scope: Tuple[Any, str, Optional[str]] = (None, "", None)


def _scope_of(scope: Any) -> Tuple[Any, str, Optional[str]]:
    """(scope, name, version) of an instrumentation scope, read once per scope object (every span of a
    tracer shares it); the last one seen is kept aside, as batches mostly come from one tracer."""
    global _last_scope
    last = _last_scope
    if last[0] is scope:
        return last
    if scope is None:
        return (None, "", None)
    cached = _scopes.get(id(scope))
    if cached is None or cached[0] is not scope:
        if len(_scopes) >= 256:
            _scopes.clear()
        cached = _scopes[id(scope)] = (scope, scope.name, scope.version)
    _last_scope = cached
    return cached


def from_readable_span(span: Any) -> SpanView:
    """View of an OpenTelemetry SDK ``ReadableSpan`` (attributes via :func:`attributes_of`)."""
    if _stores_as_sdk(span):
        name, context, parent, kind = span._name, span._context, span._parent, span._kind
        start, end, status, resource = span._start_time, span._end_time, span._status, span._resource
        scope = span._instrumentation_scope
    else:
        name, context, parent, kind = span.name, span.context, span.parent, span.kind
        start, end, status, resource = span.start_time, span.end_time, span.status, span.resource
        scope = span.instrumentation_scope
    _, span_context, status_class = _sdk_types or (None, None, None)
    if type(context) is span_context:  # a tuple: (trace_id, span_id, ...), what its properties return
        trace_id, span_id = context[0], context[1]
    else:
        trace_id, span_id = context.trace_id, context.span_id
    if parent is None:
        parent_id = None
    else:
        parent_id = parent[1] if type(parent) is span_context else parent.span_id
    if type(status) is status_class:
        status_code, description = status._status_code, status._description
    else:
        status_code, description = status.status_code, status.description
    attributes = attributes_of(span)
    events = _events_of(span)
    _, scope_name, scope_version = _scope_of(scope)
    return SpanView(
        name,
        trace_id,
        span_id,
        start or 0,
        end or start or 0,
        attributes if isinstance(attributes, dict) else dict(attributes),
        parent_id,
        _name_of(kind),
        _name_of(status_code),
        description,
        [EventView(event.name, event.timestamp, dict(event.attributes or _EMPTY)) for event in events] if events else (),
        resource_dict(resource),
        scope_name,
        scope_version,
    )


def from_sdk_log(record: Any) -> Optional[LogView]:
    """View of an SDK log record (``LogData``/``ReadableLogRecord`` or ``LogRecord``); None without a span.

    The event name moved from the ``event.name`` attribute to a field of its
    own in newer SDKs; both are read.
    """
    log = getattr(record, "log_record", record)
    span_id = getattr(log, "span_id", 0) or 0
    if not span_id:
        return None
    attributes = getattr(log, "attributes", None) or _EMPTY
    event_name = getattr(log, "event_name", None) or attributes.get("event.name")
    return LogView(
        trace_id=getattr(log, "trace_id", 0) or 0,
        span_id=span_id,
        event_name=event_name,
        body=getattr(log, "body", None),
        attributes=attributes,
        time_ns=getattr(log, "timestamp", None) or getattr(log, "observed_timestamp", None) or 0,
    )
