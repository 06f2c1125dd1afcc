"""Hostile payloads whose cost is not their size (issue 21 item 1 and its class), shared by the in-memory and
end-to-end tests: CBOR maps whose keys all hash alike, nesting, JSON binary strings.

Python does not salt the hash of ints or tuples: ``hash(k * (2**61 - 1) + r) == r``, and a tuple's hash is
xxHash over its items' hashes, which can be solved for the second item.  A dict built from n such keys
costs O(n^2) comparisons.
"""

from __future__ import annotations

import base64
import json
import random
import struct

import cbor2

MODULUS = 2**61 - 1  # sys.hash_info.modulus on 64-bit CPython
_M64 = 2**64
# CPython's tuple hash (Objects/tupleobject.c, xxHash's round with these primes, rotate 31)
_P1, _P2, _P5 = 11400714785074694791, 14029467366897019727, 2870177450012600261


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    if n < 256:
        return bytes([major << 5 | 24, n])
    if n < 65536:
        return bytes([major << 5 | 25]) + struct.pack(">H", n)
    return bytes([major << 5 | 26]) + struct.pack(">I", n)


def _bignum(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return b"\xc2" + _head(2, len(raw)) + raw  # tag 2: positive bignum


def bignum_key_map(n: int) -> bytes:
    """A CBOR map of ``n`` bignum keys k * (2**61 - 1) + 1 (all hashing to 1), each mapped to 0."""
    return _head(5, n) + b"".join(_bignum(k * MODULUS + 1) + b"\x00" for k in range(1, n + 1))


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) % _M64


def _rotr(x: int, r: int) -> int:
    return ((x >> r) | (x << (64 - r))) % _M64


def colliding_pairs(n: int, seed: int = 21) -> list[tuple[int, int]]:
    """``n`` distinct 2-tuples of ints (each fits a CBOR 64-bit integer) with the same ``hash``."""
    rnd = random.Random(seed)
    want = _rotr(0x0123456789ABCDEF * pow(_P1, -1, _M64) % _M64, 31)  # acc after the first item + h(b) * P2
    p2_inverse = pow(_P2, -1, _M64)
    pairs: list[tuple[int, int]] = []
    while len(pairs) < n:
        a = rnd.randrange(1, MODULUS)
        acc = _rotl((_P5 + a * _P2) % _M64, 31) * _P1 % _M64
        hb = (want - acc) * p2_inverse % _M64  # the hash the second item needs
        if hb < MODULUS:
            pairs.append((a, hb))
        elif hb > _M64 - MODULUS and hb != _M64 - 1:
            pairs.append((a, hb - _M64))  # hash(-x) == -x
    return pairs


def tuple_key_map(n: int) -> bytes:
    """A CBOR map of ``n`` two-int arrays as keys (plain CBOR, no tag: cbor2 makes each a tuple), all one hash."""
    return _head(5, n) + b"".join(cbor2.dumps(list(pair)) + b"\x00" for pair in colliding_pairs(n))


def cbor_hello_with(roles_value: bytes) -> bytes:
    """HELLO ``[1, "zmqwamp", {"roles": <roles_value>}]`` with ``roles_value`` as raw CBOR."""
    return b"\x83\x01" + cbor2.dumps("zmqwamp") + b"\xa1" + cbor2.dumps("roles") + roles_value


def nested(depth: int, leaf=0):
    """``leaf`` inside ``depth`` lists."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def json_bytes(data: bytes) -> str:
    """WAMP's bytes in JSON (autobahn-python, zmqwamp-client): NUL + base64."""
    return "\x00" + base64.b64encode(data).decode("ascii")


def json_binary_call(procedure: str, size: int, piece: int = 6) -> bytes:
    """A JSON CALL of about ``size`` bytes whose argument is a list of ``piece``-byte binary values."""
    n = size // (len(json.dumps(json_bytes(b"x" * piece))) + 1)
    return json.dumps([48, 1, {}, procedure, [[json_bytes(bytes([i % 256]) * piece) for i in range(n)]]]).encode()
