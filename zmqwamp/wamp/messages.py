"""WebSocket payloads <-> WAMP messages: the serializers and what a client may send.

One instance per serializer (:data:`SERIALIZERS`), shared by every session:
autobahn caches a message's bytes per serializer instance, so an EVENT is encoded
once per serializer however many sessions receive it.  :func:`decode` parses
what a client sends and refuses, with :class:`WampProtocolViolation`, anything
that is not a WAMP message a router receives; :func:`encode` writes a raw
message list.  No state and no network here.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, Protocol

import cbor2
import msgpack
from autobahn.wamp import message as m
from autobahn.wamp.exception import ProtocolError
from autobahn.wamp.serializer import (
    CBORObjectSerializer,
    JsonObjectSerializer,
    MsgPackObjectSerializer,
    Serializer,
)

from zmqwamp.internals import private_name
from zmqwamp.upstream.codec import Unsupported


class ObjectSerializer(Protocol):
    """What a session needs of a serializer (autobahn's ``*ObjectSerializer`` classes)."""

    NAME: str
    BINARY: bool

    def serialize(self, obj: Any) -> bytes: ...

    def unserialize(self, payload: bytes) -> list[Any]: ...


class WampProtocolViolation(Exception):
    """What a client sent is not a WAMP message this router takes: the session gets ABORT."""


# CBOR tags a client may not send.  25/256 (string references) and 28/29 (value
# sharing) let a few bytes stand for a value of any size: 311 bytes of nested shared
# lists made json.dumps of a CALL argument freeze the reactor for 76 s, then fail with
# MemoryError.  35 (regular expression) and 36 (MIME message) compile or parse each
# value: 2.7 s and 0.9 s of CPU per MB, against 5 ms for plain strings.  None of them
# means anything to a ZeroMQ service (the codecs cannot encode what they decode to).
REFUSED_CBOR_TAGS = {
    25: "string reference",
    256: "string reference namespace",
    28: "shared value",
    29: "shared value reference",
    35: "regular expression",
    36: "MIME message",
}


# RFC 8746 typed arrays: tag 64 (uint8) and 68 (uint8, clamped) are plain bytes, which
# cbor-x (wampy.js's CBOR) sends for every Uint8Array / Uint8ClampedArray; the others
# (65-87: wider integers and floats, in either byte order) have no ZeroMQ encoding here.
BYTES_CBOR_TAGS = (64, 68)
TYPED_ARRAY_CBOR_TAGS = range(65, 88)

# The other tags cbor2 decodes into Python objects of its own.  None of those objects
# can be carried by a codec (json.dumps refuses a datetime, a Decimal, a set ...), and
# building some of them costs far more than their bytes: a decimal fraction (4) or a
# bigfloat (5) with a bignum mantissa of 1 MB took 86 s of CPU (Decimal(int) is quadratic);
# a rational (30) of two 40 kB bignums 0.1 s (gcd); IPv6 networks 0.95 s per MB, IPv4 0.3 s,
# decimals and rationals 0.2-0.3 s per MB of small ones, against 11 ms for plain values.
# Each decodes to an Unsupported placeholder instead, in O(1): a CALL carrying one gets
# ERROR invalid_argument naming it, like a typed array.  Bignums (2, 3) stay ints (linear to
# decode; a codec writes them as JSON up to Python's 4,300 digits), the self-described CBOR
# marker (55799) its value, and tags cbor2 does not know stay CBORTag (which no codec encodes).
UNSUPPORTED_CBOR_TAGS = {
    0: "date/time string",
    1: "epoch date/time",
    4: "decimal fraction",
    5: "bigfloat",
    30: "rational number",
    37: "UUID",
    52: "IPv4 address or network",
    54: "IPv6 address or network",
    100: "epoch date",
    258: "set",
    260: "network address",
    261: "network address prefix",
    1004: "date string",
}

# How deep lists and maps may nest in a message, the message's own list being level 1 (so a
# CALL argument's contents start at level 3).  WAMP payloads are JSON documents, rarely more
# than a dozen levels deep; 128 is serde_json's default limit (Ruby's JSON: 100, .NET: 64),
# and leaves room under the recursion limits of what handles the values after decoding (the
# codecs' json.dumps, near 1,000 less the reactor's own stack; msgpack's packer, 511).  The
# decoders themselves stop cheaply: 1 MB of nested arrays cost 1 ms in each of them (json:
# RecursionError near depth 1,000; msgpack: a fixed stack of 1,024; cbor2: its max_depth, 400
# by default).  In CBOR a tag counts as a level too (cbor2 counts it so).
MAX_NESTING = 128


def _refuse_tag(tag: int) -> Callable[[Any, bool], Any]:
    def refuse(value: Any, immutable: bool) -> Any:
        raise WampProtocolViolation(f"CBOR tag {tag} ({REFUSED_CBOR_TAGS[tag]}) is not accepted")

    return refuse


def _bytes_tag(value: Any, immutable: bool) -> Any:
    if not isinstance(value, bytes):
        raise WampProtocolViolation("a CBOR typed array (tag 64 or 68) must wrap a byte string")
    return value


def _typed_array_tag(tag: int) -> Callable[[Any, bool], Any]:
    def typed_array(value: Any, immutable: bool) -> Any:
        return Unsupported(f"a CBOR typed array of tag {tag} (RFC 8746; only bytes, a Uint8Array, can be sent)")

    return typed_array


def _unsupported_tag(tag: int) -> Callable[[Any, bool], Any]:
    unsupported = Unsupported(f"a CBOR {UNSUPPORTED_CBOR_TAGS[tag]} (tag {tag})")

    def placeholder(value: Any, immutable: bool) -> Any:
        return unsupported

    return placeholder


class SafeCBORSerializer(CBORObjectSerializer):
    """Autobahn's CBOR serializer, decoding only what costs no more than its size.

    * :data:`REFUSED_CBOR_TAGS` are refused: cbor2 resolves those itself
      (``tag_hook`` never sees them); its ``semantic_decoders`` (cbor2 6) override
      that, so the decoder stops at the first such tag, before anything is expanded.
    * Typed arrays of bytes (tags 64, 68) decode as bytes; other typed arrays and
      :data:`UNSUPPORTED_CBOR_TAGS` as :class:`~zmqwamp.upstream.codec.Unsupported`, which a
      CALL refuses with an ERROR.
    * Map keys (and set elements) must be text or byte strings (cbor2's
      ``strict_hashable_types``, checked per key before it goes into the map).
      Python does not randomise the hash of ints or tuples: 20,000 integer keys
      k * (2**61 - 1) + 1 as bignums (258 kB) took 2.1 s to put in one dict, 20,000
      arrays of two ints (400 kB, no tag at all, each a tuple key) 4.4 s; strings'
      hashes are salted per process.  WAMP's maps (options, details, kwargs) have
      string keys anyway.
    * At most :data:`MAX_NESTING` levels (cbor2's ``max_depth``).

    Not batched.  Decoding errors name what cbor2 found (a key type, the depth).
    """

    _DECODERS = {
        **{tag: _refuse_tag(tag) for tag in REFUSED_CBOR_TAGS},
        **{tag: _unsupported_tag(tag) for tag in UNSUPPORTED_CBOR_TAGS},
        **{tag: _typed_array_tag(tag) for tag in TYPED_ARRAY_CBOR_TAGS},
        **{tag: _bytes_tag for tag in BYTES_CBOR_TAGS},
    }

    def unserialize(self, payload: bytes) -> list:
        try:
            return [
                cbor2.loads(
                    payload, semantic_decoders=self._DECODERS, strict_hashable_types=True, max_depth=MAX_NESTING
                )
            ]
        except cbor2.CBORDecodeError as e:
            if isinstance(e.__cause__, WampProtocolViolation):
                raise e.__cause__ from None
            raise WampProtocolViolation(f"invalid CBOR message: {e}") from None


# One instance per serializer, shared by all sessions: autobahn caches a
# message's bytes per serializer instance, so an EVENT is encoded once.
SERIALIZERS: dict[str, ObjectSerializer] = {
    "wamp.2.cbor": SafeCBORSerializer(),
    "wamp.2.msgpack": MsgPackObjectSerializer(),
    "wamp.2.json": JsonObjectSerializer(),
}

# not batched, no decimal options: see unserialize and encode
_JSON = SERIALIZERS["wamp.2.json"]
_MSGPACK = SERIALIZERS["wamp.2.msgpack"]

AUTOBAHN_JSON_ENCODER = ("autobahn.wamp.serializer", "_WAMPJsonEncoder")  # the class of json_encoder


def json_encoder() -> json.JSONEncoder | None:
    """The encoder autobahn's JsonObjectSerializer.serialize makes per call, with the same options, made once.

    Its class is private, and autobahn on ujson (``AUTOBAHN_USE_UJSON``) has
    none: then autobahn's own ``serialize`` encodes JSON, and its ``unserialize``
    decodes JSON that carries bytes.
    """
    encoder = private_name(*AUTOBAHN_JSON_ENCODER, "JSON goes through autobahn's own serialize and unserialize")
    return None if encoder is None else encoder(separators=(",", ":"), ensure_ascii=False, sort_keys=False)


_JSON_ENCODER = json_encoder()
# autobahn on the stdlib's json (it has the class): a string value starting with NUL is base64 for bytes
_JSON_BYTES = _JSON_ENCODER is not None

_CONTAINERS = frozenset((list, dict))
# The bytes that can start a msgpack array or map (fixmap, fixarray, array 16/32, map 16/32): a payload
# with no more of them than MAX_NESTING cannot nest deeper, and needs no look at what it decoded to.
_NOT_MSGPACK_CONTAINER = bytes(b for b in range(256) if not (0x80 <= b <= 0x9F or 0xDC <= b <= 0xDF))
_b64decode = base64.b64decode


def unserialize(serializer, payload: bytes) -> list:
    """``serializer.unserialize(payload)``, faster for JSON, and at most :data:`MAX_NESTING` levels deep.

    Autobahn's JSON decoder runs the pure-Python scanner, with a decoder made
    per message, only to turn string values starting with NUL into bytes
    (WAMP's binary in JSON): 0.5 s of CPU per MiB against the C decoder's
    41 ms.  Here the stdlib's C decoder reads every message, and
    :func:`_json_bytes` converts those strings afterwards, only when the text
    holds the escape ``\\u0000`` (the only way JSON carries a NUL).

    Nesting is looked at only when the payload holds more possible list or
    map openings than :data:`MAX_NESTING` (a count at C speed); CBOR's
    decoder bounds it itself.
    """
    if serializer is _JSON:
        text = payload.decode("utf8")
        try:
            value = json.loads(text)
        except RecursionError:  # about 1,000 levels: the C decoder's own bound
            raise WampProtocolViolation(_TOO_DEEP) from None
        if text.count("[") + text.count("{") > MAX_NESTING:
            _check_nesting(value)
        if "\\u0000" in text:
            if not _JSON_BYTES:
                return serializer.unserialize(payload)
            value = _json_bytes(value)
        return [value]
    raws = serializer.unserialize(payload)
    if serializer is _MSGPACK and len(payload.translate(None, _NOT_MSGPACK_CONTAINER)) > MAX_NESTING:
        for raw in raws:
            _check_nesting(raw)
    return raws


_TOO_DEEP = f"lists and maps nested more than {MAX_NESTING} levels deep"


def _check_nesting(value: Any) -> None:
    """Refuse lists and maps nested more than :data:`MAX_NESTING` deep (``value`` being level 1).

    Level by level, each container once: O(items), about 25 ms for a 1 MB message of a million small values.
    """
    level = [value] if type(value) in _CONTAINERS else []
    for _ in range(MAX_NESTING):
        inner = []
        for container in level:
            for item in container.values() if type(container) is dict else container:
                if type(item) in _CONTAINERS:
                    inner.append(item)
        if not inner:
            return
        level = inner
    raise WampProtocolViolation(_TOO_DEEP)


def _json_bytes(value: Any) -> Any:
    """``value`` with every string value (not map key) that starts with NUL replaced by the bytes of its base64 rest.

    Exactly autobahn's JSON convention (its decoder's ``parse_string``: ``base64.b64decode(s[1:])``, which
    raises on bad padding), in place: json.loads made every list and map of ``value`` for this message alone.
    A long list is first looked at as a whole (the types in it, at C speed): one of numbers is passed over.
    """
    if type(value) is str:
        return _b64decode(value[1:]) if value[:1] == "\x00" else value
    stack = [value] if type(value) in _CONTAINERS else []
    while stack:
        container = stack.pop()
        if type(container) is dict:
            for key, item in container.items():
                kind = type(item)
                if kind is str:
                    if item[:1] == "\x00":
                        container[key] = _b64decode(item[1:])  # a key already there: the dict keeps its size
                elif kind is list or kind is dict:
                    stack.append(item)
            continue
        if len(container) > 16:
            kinds = set(map(type, container))
            if str not in kinds and list not in kinds and dict not in kinds:
                continue
        for index, item in enumerate(container):
            kind = type(item)
            if kind is str:
                if item[:1] == "\x00":
                    container[index] = _b64decode(item[1:])
            elif kind is list or kind is dict:
                stack.append(item)
    return value


def encode(serializer, raw: list) -> bytes:
    """``serializer.serialize(raw)``; for JSON with one reused encoder, as autobahn's makes one per call."""
    if serializer is _JSON and _JSON_ENCODER is not None:
        return _JSON_ENCODER.encode(raw).encode("utf8")
    return serializer.serialize(raw)


# Where each message a client may send keeps its options (or details) dict:
# HELLO, ABORT, AUTHENTICATE, GOODBYE, ERROR, PUBLISH, SUBSCRIBE, CALL, CANCEL, REGISTER, YIELD.
_OPTIONS_AT = {1: 2, 3: 1, 5: 2, 6: 1, 8: 3, 16: 2, 32: 2, 48: 2, 49: 2, 64: 2, 70: 2}
# JavaScript's undefined as msgpackr (ext type 0) and cbor-x (the simple value) encode it
_MSGPACK_EXT = msgpack.ExtType
_CBOR_UNDEFINED = cbor2.undefined


def _absent(value: Any) -> bool:
    return value is None or value is _CBOR_UNDEFINED or (type(value) is _MSGPACK_EXT and value.code == 0)


def _drop_absent_options(raw: list, at: int, options: dict) -> None:
    """An option whose value is null or undefined is an option not given.

    wampy.js sends ``match: undefined`` and ``get_retained: undefined`` in every
    SUBSCRIBE; over msgpack and CBOR those arrive as values autobahn's parsers
    refuse ("invalid type"), which ended the session.
    """
    for value in options.values():
        if value is None or value is _CBOR_UNDEFINED or type(value) is _MSGPACK_EXT:
            raw[at] = {key: value for key, value in options.items() if not _absent(value)}
            return


def decode(serializer, payload: bytes, is_binary: bool) -> list[tuple[list, m.Message]]:
    """Parse a WebSocket message into (raw list, parsed message) pairs.

    The raw list is kept because autobahn's parsers drop options they do not
    know, such as SUBSCRIBE's ``_filter``.  Options that are null or undefined
    are taken out first (:func:`_drop_absent_options`).
    """
    if is_binary != serializer.BINARY:
        raise WampProtocolViolation(f"{'binary' if is_binary else 'text'} frame on a {serializer.NAME} session")
    try:
        raws = unserialize(serializer, payload)
    except WampProtocolViolation:
        raise
    except Exception as e:  # the serializers raise whatever their parser raises
        raise WampProtocolViolation(f"invalid {serializer.NAME} message: {type(e).__name__}") from None
    out = []
    for raw in raws:
        if not isinstance(raw, list) or not raw or type(raw[0]) is not int:
            raise WampProtocolViolation("a WAMP message is a list starting with an integer type")
        klass: Any = Serializer.MESSAGE_TYPE_MAP.get(raw[0])
        if klass is None:
            raise WampProtocolViolation(f"unknown WAMP message type {raw[0]}")
        at = _OPTIONS_AT.get(raw[0])
        if at is not None and len(raw) > at:
            options = raw[at]
            if options and type(options) is dict:  # most are empty: nothing to look at
                _drop_absent_options(raw, at, options)
        try:
            msg = klass.parse(raw)
        except ProtocolError as e:
            raise WampProtocolViolation(str(e)) from None
        except Exception as e:
            raise WampProtocolViolation(f"invalid {klass.__name__} message: {type(e).__name__}") from None
        out.append((raw, msg))
    return out
