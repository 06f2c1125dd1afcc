"""ZeroMQ frames <-> WAMP arguments.

Rules (per endpoint, ``auto`` unless configured):

* outgoing (CALL arguments): ``str`` -> its UTF-8 bytes, ``bytes`` -> as is,
  any other JSON value -> its compact JSON text; one frame per argument.
* incoming (reply and event frames): the JSON value if the frame parses as
  JSON, else the text if it is valid UTF-8, else the bytes; one argument per
  frame.

``json``, ``text`` and ``binary`` force one interpretation each way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class CodecError(ValueError):
    """A value cannot be carried by the endpoint's codec."""


@dataclass(frozen=True)
class Unsupported:
    """A value a client sent that no codec can carry (e.g. a CBOR typed array of floats).

    Decoding it would fail the whole message; as a value, only the CALL that
    carries it fails, with an ERROR that says ``what`` it was.
    """

    what: str


def _refuse(value: Any) -> Any:
    if isinstance(value, Unsupported):
        raise TypeError(f"{value.what} is not supported")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_text(value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_refuse).encode(
            "utf-8"
        )
    except (TypeError, ValueError) as e:
        raise CodecError(f"argument is not JSON-serializable: {e}") from None


def encode_args(args: Sequence[Any] | None, codec: str = "auto") -> list[bytes]:
    """Turn WAMP positional arguments into a multipart ZeroMQ message."""
    if not args:
        return [b""]
    frames = []
    for value in args:
        if codec == "json":
            frames.append(_json_text(value))
        elif isinstance(value, (bytes, bytearray)):
            if codec == "text":
                try:
                    bytes(value).decode("utf-8")
                except UnicodeDecodeError:
                    raise CodecError("text codec: bytes argument is not valid UTF-8") from None
            frames.append(bytes(value))
        elif isinstance(value, str):
            frames.append(value.encode("utf-8"))
        elif isinstance(value, Unsupported):
            raise CodecError(f"{value.what} is not supported")
        elif codec in ("text", "binary"):
            raise CodecError(f"{codec} codec: arguments must be strings or bytes, got {type(value).__name__}")
        else:
            frames.append(_json_text(value))
    return frames


# The first byte of any JSON text: a cheap test that spares json.loads on plain text.
_JSON_STARTS = frozenset(bytes([b]) for b in b'{["-0123456789tfn \t\r\n')


def decode_frame(frame: bytes, codec: str = "auto") -> Any:
    if codec == "binary":
        return frame
    if codec == "json" or (codec == "auto" and frame[:1] in _JSON_STARTS):
        try:
            return json.loads(frame, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            if codec == "json":
                raise CodecError("json codec: frame is not valid JSON") from None
    try:
        return frame.decode("utf-8")
    except UnicodeDecodeError:
        if codec == "text":
            raise CodecError("text codec: frame is not valid UTF-8") from None
        return frame


def decode_frames(frames: Sequence[bytes], codec: str = "auto") -> list[Any]:
    """Turn a multipart ZeroMQ message into WAMP positional arguments."""
    return [decode_frame(f, codec) for f in frames]
