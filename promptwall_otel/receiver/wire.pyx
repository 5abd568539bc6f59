# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""OTLP/protobuf traces straight from the wire to :class:`SpanView` objects: the receiver's fast decoder.

Building views through the protobuf runtime (upb) makes a Python object for
every message and field the views read, about a third of the receiver's CPU
per span. This reads the request body once, in C, and builds only the views'
own objects. It is an accelerator: it exists only where the package was built
with Cython and a C compiler, and ``decode.protobuf_span_views`` falls back to
the upb path (``decode_traces_protobuf`` + ``span_views``) wherever it is
missing, stale or turned off (``PROMPTWALL_PURE_PYTHON=1``).

Invariants (``tests/receiver/test_wire.py`` holds both paths to them, on
recorded captures and hypothesis-generated and mutated requests):

- A body the protobuf runtime parses gives views equal to ``span_views`` of
  what it parsed, field for field, with the same count of spans dropped for
  invalid ids: protobuf's merge rules included (a singular message sent twice
  merges, the last value of a scalar wins, the last member of a oneof wins).
- Every body the protobuf runtime parses is accepted here. The fields the
  views read are checked as strictly as it checks them (framing, UTF-8 of
  strings, nesting up to the same depth); the fields they skip (links, trace
  state, schema URLs, dropped counts) are checked for framing only, so a few
  bodies upb refuses for a bad string in a skipped field are read here.
- Malformed input raises :class:`WireError` (a ``ValueError``), never
  anything else, and reads nothing outside the body.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy


cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    void* PyUnicode_DATA(object)

from sys import intern as _intern

from promptwall_otel.mapping.view import EventView, SpanView

__all__ = ["WireError", "span_views"]

cdef enum:
    MAX_DEPTH = 101  # the protobuf runtime's nesting limit, counted the same way (the request is depth 1)
    # wire types
    VARINT = 0
    FIXED64 = 1
    LENGTH = 2
    START_GROUP = 3
    END_GROUP = 4
    FIXED32 = 5
    # AnyValue's oneof, as read so far
    UNSET = 0
    SCALAR = 1
    ARRAY = 2
    KVLIST = 3

_KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


class WireError(ValueError):
    """The body is not a well-formed OTLP/protobuf traces request."""


cdef struct Reader:
    const unsigned char* data
    Py_ssize_t pos
    Py_ssize_t end
    Py_ssize_t max_chars


cdef inline int _open(Reader* r, Py_ssize_t start, Py_ssize_t stop, int depth, Reader* inner) except -1:
    """A reader for the message at ``start:stop``, nested ``depth`` deep."""
    if depth > MAX_DEPTH:
        raise WireError("nested too deeply")
    inner[0] = r[0]
    inner.pos, inner.end = start, stop
    return 0


cdef inline int _varint(Reader* r, uint64_t* out) except -1:
    cdef uint64_t result = 0
    cdef int shift = 0
    cdef unsigned char byte
    cdef Py_ssize_t i = r.pos
    while True:
        if i >= r.end:
            raise WireError("truncated varint")
        byte = r.data[i]
        i += 1
        if shift < 64:
            result |= (<uint64_t>(byte & 0x7F)) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")
    r.pos = i
    out[0] = result
    return 0


cdef inline int _tag(Reader* r, uint32_t* field, int* wire_type) except -1:
    """The next field's number and wire type. Small enough to be inlined: the one-byte tags of fields 1-15
    (every field the views read) are read here, anything else, and every error, in :func:`_long_tag`."""
    cdef unsigned char byte
    if r.pos < r.end:
        byte = r.data[r.pos]
        if byte < 0x80 and byte >= 8:
            r.pos += 1
            field[0] = byte >> 3
            wire_type[0] = byte & 7
            return 0
    return _long_tag(r, field, wire_type)


cdef int _long_tag(Reader* r, uint32_t* field, int* wire_type) except -1:
    cdef uint64_t tag
    _varint(r, &tag)
    if tag >> 3 == 0 or tag >> 3 > 0x1FFFFFFF:
        raise WireError("invalid field number")
    field[0] = <uint32_t>(tag >> 3)
    wire_type[0] = <int>(tag & 7)
    return 0


cdef inline int _length(Reader* r, Py_ssize_t* start, Py_ssize_t* stop) except -1:
    """The extent of a length-delimited field; the reader moves past it. Inlined as :func:`_tag` is: sizes
    under 128 here, longer ones and every error in :func:`_long_length`."""
    cdef Py_ssize_t size
    if r.pos < r.end and r.data[r.pos] < 0x80:
        size = r.data[r.pos]
        if size < r.end - r.pos:
            r.pos += 1
            start[0] = r.pos
            r.pos += size
            stop[0] = r.pos
            return 0
    return _long_length(r, start, stop)


cdef int _long_length(Reader* r, Py_ssize_t* start, Py_ssize_t* stop) except -1:
    cdef uint64_t size
    _varint(r, &size)
    if size > <uint64_t>(r.end - r.pos):
        raise WireError("length past the end of the message")
    start[0] = r.pos
    r.pos += <Py_ssize_t>size
    stop[0] = r.pos
    return 0


cdef inline uint64_t _fixed64(Reader* r) except? 0xFFFFFFFFFFFFFFFF:
    cdef uint64_t value = 0
    cdef int i
    if r.end - r.pos < 8:
        raise WireError("truncated fixed64")
    for i in range(8):  # little-endian on the wire, whatever the host
        value |= (<uint64_t>r.data[r.pos + i]) << (8 * i)
    r.pos += 8
    return value


cdef int _skip(Reader* r, uint32_t field, int wire_type, int depth) except -1:
    """Step over a field the views do not read (framing checked, contents not)."""
    cdef uint64_t ignored
    cdef Py_ssize_t start, stop
    cdef uint32_t inner
    cdef int inner_type
    if wire_type == VARINT:
        _varint(r, &ignored)
    elif wire_type == FIXED64:
        if r.end - r.pos < 8:
            raise WireError("truncated fixed64")
        r.pos += 8
    elif wire_type == LENGTH:
        _length(r, &start, &stop)
    elif wire_type == FIXED32:
        if r.end - r.pos < 4:
            raise WireError("truncated fixed32")
        r.pos += 4
    elif wire_type == START_GROUP:
        if depth >= MAX_DEPTH:
            raise WireError("nested too deeply")
        while True:
            if r.pos >= r.end:
                raise WireError("unterminated group")
            _tag(r, &inner, &inner_type)
            if inner_type == END_GROUP:
                if inner != field:
                    raise WireError("mismatched end of group")
                return 0
            _skip(r, inner, inner_type, depth + 1)
    else:
        raise WireError("invalid wire type")
    return 0


cdef inline object _text(Reader* r, Py_ssize_t start, Py_ssize_t stop):
    """A string field; strict UTF-8 as the protobuf runtime requires of proto3 strings."""
    try:
        return PyUnicode_DecodeUTF8(<const char*>r.data + start, stop - start, NULL)
    except UnicodeDecodeError:
        raise WireError("a string field is not valid UTF-8") from None


# Attribute keys repeat span after span: each is decoded once into an interned str and found here by its
# bytes after that. Interned, it is the very object the mapping's constant keys are, so every dict lookup
# and key-set comparison downstream is an identity test, and no str is allocated or hashed per key.
# Fixed size: a key set that varies per span (indexed messages) only evicts, never grows it.
DEF _KEY_SLOTS = 4096
DEF _KEY_MAX_BYTES = 96
cdef list _keys = [None] * _KEY_SLOTS


cdef inline object _key(Reader* r, Py_ssize_t start, Py_ssize_t stop):
    """An attribute key: the cached interned str when its (ASCII) bytes were seen before, else decoded."""
    cdef Py_ssize_t size = stop - start
    cdef const unsigned char* data = r.data + start
    cdef uint32_t h = 2166136261u
    cdef Py_ssize_t i
    if size > _KEY_MAX_BYTES:
        return _text(r, start, stop)
    for i in range(size):  # FNV-1a
        h = (h ^ data[i]) * 16777619u
    i = h & (_KEY_SLOTS - 1)
    cached = _keys[i]
    if cached is not None and PyUnicode_GET_LENGTH(cached) == size \
            and memcmp(PyUnicode_DATA(cached), data, size) == 0:
        return cached
    key = _text(r, start, stop)
    if PyUnicode_IS_COMPACT_ASCII(key):  # one byte per character: its data are its UTF-8 bytes
        key = _intern(key)
        _keys[i] = key
    return key


cdef inline object _value_text(Reader* r, Py_ssize_t start, Py_ssize_t stop):
    """A string value, cut to ``max_chars`` characters as the upb path cuts it."""
    text = _text(r, start, stop)
    if stop - start > r.max_chars and len(text) > r.max_chars:
        return text[:r.max_chars]
    return text


cdef inline object _bytes(Reader* r, Py_ssize_t start, Py_ssize_t stop):
    return PyBytes_FromStringAndSize(<const char*>r.data + start, stop - start)


cdef inline object _id(Reader* r, Py_ssize_t start, Py_ssize_t stop, Py_ssize_t size):
    """A non-zero id of exactly ``size`` bytes as an int (big-endian), else None."""
    cdef uint64_t high = 0, low = 0
    cdef Py_ssize_t i
    if stop - start != size:
        return None
    if size == 16:
        for i in range(8):
            high = (high << 8) | r.data[start + i]
        start += 8
    for i in range(8):
        low = (low << 8) | r.data[start + i]
    if size == 16:
        if high == 0 and low == 0:
            return None
        return (<object>high << 64) | <object>low
    return low if low else None


cdef object _any_value(Reader* r, Py_ssize_t start, Py_ssize_t stop, int depth, list more, int* kind):
    """An AnyValue (one or, merged, several occurrences); ``kind`` is its oneof (UNSET on entry).

    Arrays are gathered in a list here and turned into a tuple by the caller.
    """
    cdef Reader inner
    cdef uint32_t field
    cdef int wire_type
    cdef uint64_t raw
    cdef double number
    cdef Py_ssize_t s, e
    cdef Py_ssize_t extra = 0
    value = None
    _open(r, start, stop, depth, &inner)
    while True:
        while inner.pos < inner.end:
            _tag(&inner, &field, &wire_type)
            if field == 1 and wire_type == LENGTH:
                _length(&inner, &s, &e)
                value = _value_text(&inner, s, e)
                kind[0] = SCALAR
            elif field == 2 and wire_type == VARINT:
                _varint(&inner, &raw)
                value = raw != 0
                kind[0] = SCALAR
            elif field == 3 and wire_type == VARINT:
                _varint(&inner, &raw)
                value = <int64_t>raw
                kind[0] = SCALAR
            elif field == 4 and wire_type == FIXED64:
                raw = _fixed64(&inner)
                memcpy(&number, &raw, 8)
                value = number
                kind[0] = SCALAR
            elif field == 5 and wire_type == LENGTH:
                _length(&inner, &s, &e)
                if kind[0] != ARRAY:
                    value = []
                    kind[0] = ARRAY
                _array(&inner, s, e, depth + 1, <list>value)
            elif field == 6 and wire_type == LENGTH:
                _length(&inner, &s, &e)
                if kind[0] != KVLIST:
                    value = {}
                    kind[0] = KVLIST
                _key_values(&inner, s, e, depth + 1, 1, <dict>value)
            elif field == 7 and wire_type == LENGTH:
                _length(&inner, &s, &e)
                value = _bytes(&inner, s, e)
                kind[0] = SCALAR
            elif field == 8 and wire_type == VARINT:  # string_value_strindex: a profiles dictionary traces lack
                _varint(&inner, &raw)
                value = None
                kind[0] = SCALAR
            else:
                _skip(&inner, field, wire_type, depth + 1)
        if more is None or extra >= len(more):
            return value
        s, e = more[extra]
        extra += 1
        inner.pos, inner.end = s, e


cdef int _array(Reader* r, Py_ssize_t start, Py_ssize_t stop, int depth, list values) except -1:
    """ArrayValue: its values appended to ``values``."""
    cdef Reader inner
    cdef uint32_t field
    cdef int wire_type
    cdef Py_ssize_t s, e
    cdef int kind
    _open(r, start, stop, depth, &inner)
    while inner.pos < inner.end:
        _tag(&inner, &field, &wire_type)
        if field == 1 and wire_type == LENGTH:
            _length(&inner, &s, &e)
            kind = UNSET
            value = _any_value(&inner, s, e, depth + 1, None, &kind)
            values.append(tuple(value) if kind == ARRAY else value)
        else:
            _skip(&inner, field, wire_type, depth + 1)
    return 0


cdef int _key_values(Reader* r, Py_ssize_t start, Py_ssize_t stop, int depth, uint32_t number, dict into) except -1:
    """The KeyValue fields numbered ``number`` of a message into ``into``, in order (a later key wins).

    A pair without a value is None: the SDK keeps None attribute values and
    its exporters send them as an empty AnyValue, so this is what round-trips.
    """
    cdef Reader inner
    cdef uint32_t field
    cdef int wire_type
    cdef Py_ssize_t s, e
    _open(r, start, stop, depth, &inner)
    while inner.pos < inner.end:
        _tag(&inner, &field, &wire_type)
        if field == number and wire_type == LENGTH:
            _length(&inner, &s, &e)
            _key_value(&inner, s, e, depth + 1, into)
        else:
            _skip(&inner, field, wire_type, depth + 1)
    return 0


cdef int _key_value(Reader* r, Py_ssize_t start, Py_ssize_t stop, int depth, dict into) except -1:
    cdef Reader inner
    cdef uint32_t field
    cdef int wire_type
    cdef Py_ssize_t s, e
    cdef Py_ssize_t value_start = -1, value_stop = -1
    cdef list more = None
    cdef int kind = UNSET
    _open(r, start, stop, depth, &inner)
    key = ""
    while inner.pos < inner.end:
        _tag(&inner, &field, &wire_type)
        if field == 1 and wire_type == LENGTH:
            _length(&inner, &s, &e)
            key = _key(&inner, s, e)
        elif field == 2 and wire_type == LENGTH:
            _length(&inner, &s, &e)
            if value_start < 0:
                value_start, value_stop = s, e
            else:  # the value sent twice: the occurrences merge
                if more is None:
                    more = []
                more.append((s, e))
        else:
            _skip(&inner, field, wire_type, depth + 1)
    if value_start < 0:
        into[key] = None
        return 0
    value = _any_value(&inner, value_start, value_stop, depth + 1, more, &kind)
    into[key] = tuple(value) if kind == ARRAY else value
    return 0


cdef object _event(Reader* r, Py_ssize_t start, Py_ssize_t stop, int depth):
    cdef Reader inner
    cdef uint32_t field
    cdef int wire_type
    cdef Py_ssize_t s, e
    cdef uint64_t time_ns = 0
    _open(r, start, stop, depth, &inner)
    name = ""
    attributes = {}
    while inner.pos < inner.end:
        _tag(&inner, &field, &wire_type)
        if field == 1 and wire_type == FIXED64:
            time_ns = _fixed64(&inner)
        elif field == 2 and wire_type == LENGTH:
            _length(&inner, &s, &e)
            name = _text(&inner, s, e)
        elif field == 3 and wire_type == LENGTH:
            _length(&inner, &s, &e)
            _key_value(&inner, s, e, depth + 1, attributes)
        else:
            _skip(&inner, field, wire_type, depth + 1)
    return EventView(name, time_ns, attributes)


cdef int _status(Reader* r, Py_ssize_t start, Py_ssize_t stop, int depth, int64_t* code, list message) except -1:
    cdef Reader inner
    cdef uint32_t field
    cdef int wire_type
    cdef Py_ssize_t s, e
    cdef uint64_t raw
    _open(r, start, stop, depth, &inner)
    while inner.pos < inner.end:
        _tag(&inner, &field, &wire_type)
        if field == 2 and wire_type == LENGTH:
            _length(&inner, &s, &e)
            message[0] = _text(&inner, s, e)
        elif field == 3 and wire_type == VARINT:
            _varint(&inner, &raw)
            code[0] = <int32_t>raw  # an enum is an int32 on the wire
        else:
            _skip(&inner, field, wire_type, depth + 1)
    return 0


cdef int _span(Reader* r, Py_ssize_t start, Py_ssize_t stop, int depth, object resource, object scope_name,
               object scope_version, list views) except -1:
    """One Span: appended to ``views`` if its ids are valid; returns 1 if it was dropped for its ids."""
    cdef Reader inner
    cdef uint32_t field
    cdef int wire_type
    cdef Py_ssize_t s, e
    cdef uint64_t raw
    cdef uint64_t start_ns = 0, end_ns = 0
    cdef int64_t kind = 0, code = 0
    cdef Py_ssize_t trace_start = 0, trace_stop = 0, span_start = 0, span_stop = 0
    cdef Py_ssize_t parent_start = 0, parent_stop = 0, i
    cdef bint parent_zero = True
    _open(r, start, stop, depth, &inner)
    name = ""
    attributes = {}
    events = None
    message = [""]
    while inner.pos < inner.end:
        _tag(&inner, &field, &wire_type)
        if field == 9 and wire_type == LENGTH:
            _length(&inner, &s, &e)
            _key_value(&inner, s, e, depth + 1, attributes)
        elif field == 1 and wire_type == LENGTH:
            _length(&inner, &trace_start, &trace_stop)
        elif field == 2 and wire_type == LENGTH:
            _length(&inner, &span_start, &span_stop)
        elif field == 4 and wire_type == LENGTH:
            _length(&inner, &parent_start, &parent_stop)
        elif field == 5 and wire_type == LENGTH:
            _length(&inner, &s, &e)
            name = _text(&inner, s, e)
        elif field == 6 and wire_type == VARINT:
            _varint(&inner, &raw)
            kind = <int32_t>raw
        elif field == 7 and wire_type == FIXED64:
            start_ns = _fixed64(&inner)
        elif field == 8 and wire_type == FIXED64:
            end_ns = _fixed64(&inner)
        elif field == 11 and wire_type == LENGTH:
            _length(&inner, &s, &e)
            if events is None:
                events = []
            events.append(_event(&inner, s, e, depth + 1))
        elif field == 15 and wire_type == LENGTH:
            _length(&inner, &s, &e)
            _status(&inner, s, e, depth + 1, &code, message)
        elif field == 3 and wire_type == LENGTH:  # trace_state: a string, not read
            _length(&inner, &s, &e)
        else:
            _skip(&inner, field, wire_type, depth + 1)
    trace_id = _id(&inner, trace_start, trace_stop, 16)
    span_id = _id(&inner, span_start, span_stop, 8)
    for i in range(parent_start, parent_stop):
        if inner.data[i] != 0:
            parent_zero = False
            break
    if parent_zero:
        parent_id = None  # empty or all zero: a root
    else:
        parent_id = _id(&inner, parent_start, parent_stop, 8)
        if parent_id is None:
            return 1  # a parent id of the wrong length
    if trace_id is None or span_id is None:
        return 1
    views.append(SpanView(  # positional, in SpanView's order, as decode.span_views builds it
        name,
        trace_id,
        span_id,
        start_ns,
        end_ns or start_ns,
        attributes,
        parent_id,
        _KINDS.get(kind, "INTERNAL"),
        _STATUS.get(code, "UNSET"),
        message[0] or None,
        events if events is not None else (),
        resource,
        scope_name,
        scope_version,
    ))
    return 0


cdef int _scope(Reader* r, Py_ssize_t start, Py_ssize_t stop, int depth, list name_version) except -1:
    """InstrumentationScope's name and version into ``name_version`` (attributes are framing-checked only)."""
    cdef Reader inner
    cdef uint32_t field
    cdef int wire_type
    cdef Py_ssize_t s, e
    _open(r, start, stop, depth, &inner)
    while inner.pos < inner.end:
        _tag(&inner, &field, &wire_type)
        if field == 1 and wire_type == LENGTH:
            _length(&inner, &s, &e)
            name_version[0] = _text(&inner, s, e)
        elif field == 2 and wire_type == LENGTH:
            _length(&inner, &s, &e)
            name_version[1] = _text(&inner, s, e)
        else:
            _skip(&inner, field, wire_type, depth + 1)
    return 0


cdef Py_ssize_t _scope_spans(Reader* r, Py_ssize_t start, Py_ssize_t stop, int depth, object resource,
                             list views) except -1:
    """A ScopeSpans' spans into ``views``; how many were dropped for invalid ids. The scope may follow them."""
    cdef Reader inner
    cdef uint32_t field
    cdef int wire_type
    cdef Py_ssize_t s, e
    cdef Py_ssize_t invalid = 0
    _open(r, start, stop, depth, &inner)
    name_version = ["", ""]
    spans = []
    while inner.pos < inner.end:
        _tag(&inner, &field, &wire_type)
        if field == 1 and wire_type == LENGTH:
            _length(&inner, &s, &e)
            _scope(&inner, s, e, depth + 1, name_version)
        elif field == 2 and wire_type == LENGTH:
            _length(&inner, &s, &e)
            spans.append((s, e))
        else:
            _skip(&inner, field, wire_type, depth + 1)
    scope_name, scope_version = name_version
    for s, e in spans:
        invalid += _span(&inner, s, e, depth + 1, resource, scope_name, scope_version, views)
    return invalid


cdef Py_ssize_t _resource_spans(Reader* r, Py_ssize_t start, Py_ssize_t stop, int depth, list views) except -1:
    cdef Reader inner
    cdef uint32_t field
    cdef int wire_type
    cdef Py_ssize_t s, e
    cdef Py_ssize_t invalid = 0
    _open(r, start, stop, depth, &inner)
    resource = {}  # every span of the ResourceSpans shares it, as spans of one SDK provider do
    scopes = []
    while inner.pos < inner.end:
        _tag(&inner, &field, &wire_type)
        if field == 1 and wire_type == LENGTH:
            _length(&inner, &s, &e)
            _key_values(&inner, s, e, depth + 1, 1, resource)  # Resource.attributes; occurrences merge
        elif field == 2 and wire_type == LENGTH:
            _length(&inner, &s, &e)
            scopes.append((s, e))
        else:
            _skip(&inner, field, wire_type, depth + 1)
    for s, e in scopes:
        invalid += _scope_spans(&inner, s, e, depth + 1, resource, views)
    return invalid


def span_views(body, Py_ssize_t max_chars):
    """``(views, spans dropped for invalid ids)`` of an ExportTraceServiceRequest body; WireError if malformed.

    String values longer than ``max_chars`` characters are cut to it.
    """
    cdef const unsigned char[:] data = body
    cdef Reader r
    cdef uint32_t field
    cdef int wire_type
    cdef Py_ssize_t s, e
    cdef Py_ssize_t invalid = 0
    views = []
    if data.shape[0] == 0:
        return views, 0
    r.data = &data[0]
    r.pos = 0
    r.end = data.shape[0]
    r.max_chars = max_chars
    while r.pos < r.end:
        _tag(&r, &field, &wire_type)
        if field == 1 and wire_type == LENGTH:
            _length(&r, &s, &e)
            invalid += _resource_spans(&r, s, e, 2, views)
        else:
            _skip(&r, field, wire_type, 2)
    return views, invalid
