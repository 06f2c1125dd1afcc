"""zmqwamp.wamp.messages: what decoding one message may cost and what it gives (issue 21: item 1, item 11's JSON path,
and their class), in memory: CBOR map keys that all hash alike, nesting, cbor2's own tag decoders, refused CBOR
tags, JSON's binary strings (each costs at most a small multiple of the message's size, measured in CPU seconds of
this process), and what independent clients (wampy.js) send: null and undefined options, CBOR typed arrays.
Against a real bridge: tests/e2e/test_hostile_wire.py, tests/e2e/test_hostile_input.py; wampy.js itself:
tests/js/wampy.test.mjs.
"""

from __future__ import annotations

import json
import time

import cbor2
import msgpack
import pytest
from autobahn.wamp.serializer import JsonObjectSerializer, MsgPackObjectSerializer
from hypothesis import given, settings
from hypothesis import strategies as st

from zmqwamp.testing import new_session
from zmqwamp.upstream.codec import CodecError, Unsupported, encode_args
from zmqwamp.wamp.messages import MAX_NESTING, SERIALIZERS, WampProtocolViolation, decode, unserialize

from collisions import MODULUS, bignum_key_map, cbor_hello_with, colliding_pairs, json_bytes, nested, tuple_key_map
from memory import PUB, REP
from minws import ABORT
from probes import shared_bomb

CBOR = SERIALIZERS["wamp.2.cbor"]
MSGPACK = SERIALIZERS["wamp.2.msgpack"]
JSON = SERIALIZERS["wamp.2.json"]


def cpu_of(f, *args):
    """(CPU seconds of this process, what ``f`` returned or raised)."""
    start = time.process_time()
    try:
        result = f(*args)
    except Exception as e:
        result = e
    return time.process_time() - start, result


# -- item 1: CBOR map keys ---------------------------------------------------------------------------------------------


def test_the_colliding_keys_do_collide():
    """The attack material (tests/collisions.py) really does hash alike: bignums k*(2**61-1)+1, and the pairs."""
    assert {hash(k * MODULUS + 1) for k in range(1, 100)} == {1}
    assert len({hash(pair) for pair in colliding_pairs(100)}) == 1


@pytest.mark.parametrize(
    "what, roles, key_type",
    [
        # 20,000 of each: 2.1 s (bignums, 258 kB) and 4.4 s (tuples, 400 kB) of CPU before the fix
        ("bignum keys k*(2**61-1)+1", bignum_key_map(20_000), "int"),
        ("arrays of two ints as keys (tuples)", tuple_key_map(20_000), "tuple"),
    ],
)
def test_cbor_map_keys_that_hash_alike_are_refused_at_the_first_key(what, roles, key_type):
    """A HELLO whose roles map has keys that all hash alike: refused at its first key, in microseconds, naming it."""
    seconds, result = cpu_of(decode, CBOR, cbor_hello_with(roles), True)
    assert seconds < 0.2, f"{what}: {seconds:.2f} s of CPU"
    assert isinstance(result, WampProtocolViolation), result
    assert f"map key must be a text string or byte string, not {key_type}" in str(result)


@pytest.mark.parametrize(
    "key",
    [1, 1.5, None, True, (1, 2), cbor2.CBORTag(2, b"\x01" * 9), cbor2.CBORTag(1, 0), cbor2.CBORTag(99999, "a")],
    ids=["int", "float", "null", "bool", "array", "bignum", "tagged-epoch", "unknown-tag"],
)
def test_cbor_map_keys_must_be_strings_at_any_depth(key):
    """A CBOR map key that is not a text or byte string, however deep and of whatever kind, refuses the message."""
    payload = cbor2.dumps([48, 1, {}, REP, [{"ok": [{key: 0}]}]])
    with pytest.raises(WampProtocolViolation, match="map key must be a text string or byte string"):
        decode(CBOR, payload, True)


def test_cbor_string_and_byte_string_keys_still_work():
    """CBOR maps with text and byte string keys decode as before, in arguments and keyword arguments."""
    [(_, msg)] = decode(CBOR, cbor2.dumps([48, 1, {}, REP, [{"text": 1, b"bytes": 2}], {"kw": 3}]), True)
    assert msg.args == [{"text": 1, b"bytes": 2}] and msg.kwargs == {"kw": 3}


def test_msgpack_map_keys_must_be_strings_already():
    """autobahn's msgpack decoding (msgpack.unpackb, strict_map_key) refuses other keys before the map is built."""
    array_keys = b"\x83" + b"".join(msgpack.packb(list(pair)) + b"\x00" for pair in colliding_pairs(3))
    for payload in (msgpack.packb([48, 1, {}, REP, [{1: 0}]]), msgpack.packb([48, 1, {}, REP, []])[:-1] + b"\x91" + array_keys):
        with pytest.raises(WampProtocolViolation, match="invalid msgpack message: ValueError"):
            decode(MSGPACK, payload, True)
    with pytest.raises(ValueError, match="not allowed for map key"):
        msgpack.unpackb(array_keys, raw=False)


# -- nesting, in all three serializers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERIALIZERS))
def test_nesting_up_to_the_limit_is_decoded(name):
    """The CALL's list is level 1, its arguments' list 2: an argument of MAX_NESTING - 2 lists still decodes."""
    serializer = SERIALIZERS[name]
    value = nested(MAX_NESTING - 2)
    [(_, msg)] = decode(serializer, serializer.serialize([48, 1, {}, REP, [value]]), serializer.BINARY)
    assert msg.args == [value]


@pytest.mark.parametrize("name", sorted(SERIALIZERS))
@pytest.mark.parametrize("inside", ["list", "map"])
def test_one_level_more_is_refused(name, inside):
    """One level of lists or maps past MAX_NESTING refuses the message, in each serializer."""
    serializer = SERIALIZERS[name]
    value = [nested(MAX_NESTING - 2)] if inside == "list" else [{"k": nested(MAX_NESTING - 3)}]
    with pytest.raises(WampProtocolViolation, match=rf"nest(ed|ing).*{MAX_NESTING}|depth \({MAX_NESTING}\)"):
        decode(serializer, serializer.serialize([48, 1, {}, REP, [value]]), serializer.BINARY)


@pytest.mark.parametrize("name", sorted(SERIALIZERS))
def test_a_megabyte_of_nesting_is_refused_at_once(name):
    """1 MB of list openings: each decoder stops at its bound (json's C decoder at its recursion limit)."""
    serializer = SERIALIZERS[name]
    opening = {"wamp.2.json": b"[", "wamp.2.msgpack": b"\x91", "wamp.2.cbor": b"\x81"}[name]
    seconds, result = cpu_of(decode, serializer, opening * 1_000_000, serializer.BINARY)
    assert isinstance(result, WampProtocolViolation), result
    assert seconds < 0.1, f"{seconds:.2f} s"


@pytest.mark.parametrize("name", ["wamp.2.json", "wamp.2.msgpack"])
def test_many_lists_side_by_side_are_not_nesting(name):
    """Over MAX_NESTING list openings side by side: looked at (linear), and accepted."""
    serializer = SERIALIZERS[name]
    value = [[i] for i in range(10 * MAX_NESTING)]
    [(_, msg)] = decode(serializer, serializer.serialize([48, 1, {}, REP, [value]]), serializer.BINARY)
    assert msg.args == [value]


# -- CBOR tags: refused, or not run ------------------------------------------------------------------------------------


def test_refused_cbor_tags_in_memory(world):
    """The check is in the serializer: the decode stops at the first shared value; a CBOR session aborts, naming it."""
    with pytest.raises(WampProtocolViolation, match=r"CBOR tag 2[89]"):
        decode(SERIALIZERS["wamp.2.cbor"], shared_bomb(40, "tcp://127.0.0.1:9999"), True)
    session, transport = new_session(world, SERIALIZERS["wamp.2.cbor"])
    session.message_received(cbor2.dumps([1, "zmqwamp", {"roles": {"caller": {}}}]), True)
    session.message_received(shared_bomb(3, "tcp://127.0.0.1:9999"), True)
    abort = cbor2.loads(transport.sent[-1][0])
    assert abort[0] == ABORT and "CBOR tag" in abort[1]["message"] and transport.closed == 1000
    assert world.forwarder.requests == []


@pytest.mark.parametrize(
    "tag, value, name",
    [
        (4, [-2, cbor2.CBORTag(2, b"\xff" * 100_000)], "decimal fraction"),  # Decimal(int): 0.9 s before, quadratic
        (5, [-1, cbor2.CBORTag(2, b"\xff" * 100_000)], "bigfloat"),
        (30, [cbor2.CBORTag(2, b"\xfd" * 40_000), cbor2.CBORTag(2, b"\xfb" * 40_000)], "rational number"),  # gcd
        (54, [48, b"\x20\x01\x0d\xb8\x12\x34"], "IPv6 address or network"),
        (1, 1363896240, "epoch date/time"),
        (258, ["a", "b"], "set"),
    ],
)
def test_cbor2_tag_decoders_are_not_run(tag, value, name):
    """What cbor2 would build (a Decimal, a Fraction, an ip_network, a set ...) becomes a placeholder a CALL refuses."""
    seconds, result = cpu_of(decode, CBOR, cbor2.dumps([48, 1, {}, REP, [cbor2.CBORTag(tag, value)]]), True)
    [(_, msg)] = result
    assert isinstance(msg.args[0], Unsupported) and seconds < 0.05, (result, seconds)
    with pytest.raises(CodecError, match=rf"a CBOR {name} \(tag {tag}\) is not supported"):
        encode_args(msg.args)


def test_cbor_bignums_and_self_description_still_decode():
    """CBOR bignums and the self-describe tag still decode, and a CALL sends them as frames."""
    payload = cbor2.dumps([48, 1, {}, REP, [2**70, -(2**70), cbor2.CBORTag(55799, "self-described")]])
    [(_, msg)] = decode(CBOR, payload, True)
    assert msg.args == [2**70, -(2**70), "self-described"]
    assert encode_args(msg.args) == [b"%d" % 2**70, b"%d" % -(2**70), b"self-described"]


def test_cbor_typed_arrays():
    """Tag 64 (Uint8Array) and 68 (Uint8ClampedArray) are bytes; other typed arrays are values a CALL refuses."""
    serializer = SERIALIZERS["wamp.2.cbor"]
    payload = cbor2.dumps([48, 1, {}, REP, [cbor2.CBORTag(64, b"\x01\x02"), cbor2.CBORTag(68, b"\x03"), cbor2.CBORTag(85, b"\0\0\xc0?")]])
    [(_, msg)] = decode(serializer, payload, True)
    assert msg.args[:2] == [b"\x01\x02", b"\x03"]
    assert isinstance(msg.args[2], Unsupported)
    with pytest.raises(CodecError, match="typed array of tag 85"):
        encode_args(msg.args)
    with pytest.raises(CodecError, match="typed array of tag 85"):
        encode_args([{"nested": msg.args[2]}])


# -- item 11: JSON text with \u0000 ------------------------------------------------------------------------------------


def test_json_binary_strings_are_bytes_and_keys_stay_text():
    """JSON strings of NUL plus base64 are bytes in values (WAMP's binary in JSON), never in map keys."""
    text = json.dumps([48, 1, {}, REP, [json_bytes(b"\x00\xff"), {json_bytes(b"k"): json_bytes(b"v")}, "plain"]])
    [(_, msg)] = decode(JSON, text.encode(), False)
    assert msg.args == [b"\x00\xff", {json_bytes(b"k"): b"v"}, "plain"]


def test_json_with_nul_is_decoded_at_c_speed():
    """One NUL string among half a million numbers (1.4 MiB): autobahn's pure-Python scanner took 0.4-0.5 s."""
    payload = json.dumps([48, 1, {}, REP, [[0] * 500_000, json_bytes(b"x")]]).encode()
    theirs, expected = cpu_of(JsonObjectSerializer().unserialize, payload)
    ours, result = cpu_of(unserialize, JSON, payload)
    assert result == expected
    print(f"autobahn {theirs:.3f} s, zmqwamp {ours:.3f} s of CPU")
    assert ours * 4 < theirs, f"zmqwamp {ours:.3f} s, autobahn {theirs:.3f} s"


_b64ish = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= -_!\x00é", max_size=12)


_strings = st.one_of(st.text(max_size=8), _b64ish.map(lambda s: "\x00" + s), st.binary(max_size=12).map(json_bytes))


_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), _strings),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(_strings, inner, max_size=5)),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(value=_json_values, ascii_only=st.booleans())
def test_json_decoding_is_autobahns(value, ascii_only):
    """Differential: zmqwamp's JSON decoding gives what autobahn's gives (bytes for NUL + base64 values, keys left
    alone), or fails where it fails (bad base64: binascii.Error, non-ASCII after the NUL: ValueError)."""
    payload = json.dumps([48, 1, {}, REP, [value]], ensure_ascii=ascii_only).encode()
    _, expected = cpu_of(JsonObjectSerializer().unserialize, payload)
    _, result = cpu_of(unserialize, JSON, payload)
    if isinstance(expected, Exception):
        assert isinstance(expected, ValueError) and isinstance(result, ValueError), (expected, result)
    else:
        assert result == expected


# -- null and undefined options (wampy.js) -----------------------------------------------------------------------------


MSGPACK_UNDEFINED = msgpack.ExtType(0, b"\x00")  # what msgpackr (wampy) sends for undefined


@pytest.mark.parametrize("name, undefined", [("wamp.2.msgpack", MSGPACK_UNDEFINED), ("wamp.2.cbor", cbor2.undefined)])
def test_undefined_and_null_options_are_absent(name, undefined):
    """wampy's SUBSCRIBE (match and get_retained undefined) parses, as if they were not given; a CALL's
    kwargs keep their nulls (only options are cleaned)."""
    serializer = SERIALIZERS[name]
    subscribe = [32, 1, {"match": undefined, "get_retained": None, "_filter": "hugo"}, PUB]
    call = [48, 2, {"timeout": undefined}, "tcp://127.0.0.1:9999", ["x"], {"keep": None}]
    [(raw_sub, msg_sub)], [(raw_call, msg_call)] = (
        decode(serializer, serializer.serialize(m), True) for m in (subscribe, call)
    )
    assert raw_sub[2] == {"_filter": "hugo"} and msg_sub.match == "exact" and msg_sub.topic == PUB
    assert raw_call[2] == {} and msg_call.timeout is None and msg_call.kwargs == {"keep": None}


def test_msgpack_session_subscribes_with_undefined_options(world):
    """The whole path over msgpack: the session is not aborted (it was: 'invalid type ... for match')."""
    serializer = MsgPackObjectSerializer()
    session, transport = new_session(world, serializer)
    session.message_received(serializer.serialize([1, "zmqwamp", {"roles": {"subscriber": {}}}]), True)
    session.message_received(
        serializer.serialize([32, 1, {"match": MSGPACK_UNDEFINED, "get_retained": MSGPACK_UNDEFINED, "_filter": "hugo"}, PUB]),
        True,
    )
    replies = [serializer.unserialize(p)[0] for p, _ in transport.sent]
    assert [r[0] for r in replies] == [2, 33], replies


# -- an autobahn without its private JSON encoder class (zmqwamp.internals) --------------------------------------------


def test_without_autobahns_json_encoder_class_json_goes_through_autobahn(monkeypatch, log_events):
    """An autobahn without _WAMPJsonEncoder (renamed, or on ujson): no encoder of our own, one warning; JSON is
    encoded by autobahn's serialize and JSON carrying bytes decoded by its unserialize, as before."""
    from zmqwamp import internals
    from zmqwamp.wamp import messages

    monkeypatch.setattr(messages, "AUTOBAHN_JSON_ENCODER", ("autobahn.wamp.serializer", "_RenamedJsonEncoder"))
    monkeypatch.setattr(internals, "_warned", set())
    assert messages.json_encoder() is None
    assert [e["missing"] for e in log_events if e.get("what") == "autobahn.wamp.serializer"] == ["_RenamedJsonEncoder"]
    monkeypatch.setattr(messages, "_JSON_ENCODER", None)
    monkeypatch.setattr(messages, "_JSON_BYTES", False)
    raw = [36, 5, 7, {}, [b"\x00\xff", "é", {"k": [1.5, None]}]]
    assert messages.encode(JSON, raw) == JsonObjectSerializer().serialize(raw)
    payload = json.dumps([48, 1, {}, REP, [json_bytes(b"\x00\xff"), "plain"]]).encode()
    assert unserialize(JSON, payload) == JsonObjectSerializer().unserialize(payload)
    [(_, msg)] = decode(JSON, payload, False)
    assert msg.args == [b"\x00\xff", "plain"]
