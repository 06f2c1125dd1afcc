"""Frames <-> WAMP arguments, per codec (no network)."""

import pytest

from zmqwamp.upstream.codec import CodecError, decode_frames, encode_args


def test_auto_encodes_strings_bytes_and_json():
    """auto: a string is its UTF-8, bytes are themselves, anything else its compact JSON; one frame per argument."""
    assert encode_args(["héllo", b"\xff", {"a": [1, None]}, 3, True]) == [
        "héllo".encode(), b"\xff", b'{"a":[1,null]}', b"3", b"true",
    ]


def test_no_arguments_is_one_empty_frame():
    """A CALL without arguments sends one empty frame (ZeroMQ has no message of no frames)."""
    assert encode_args([]) == [b""]
    assert encode_args(None) == [b""]


def test_auto_decodes_json_then_text_then_bytes():
    """auto: a reply frame is its JSON value if it parses, else UTF-8 text, else bytes."""
    assert decode_frames([b'{"x": 1}', b"got this hello", b"\xff\xfe", b"12", b""]) == [
        {"x": 1}, "got this hello", b"\xff\xfe", 12, "",
    ]


def test_auto_never_yields_nan():
    """auto: NaN and Infinity (JSON extensions no client can take) stay text."""
    assert decode_frames([b"NaN", b"Infinity"]) == ["NaN", "Infinity"]


def test_json_codec_encodes_strings_as_json_and_rejects_non_json_frames():
    """json: a string argument is sent as a JSON string, and a reply frame that is not JSON is an error."""
    assert encode_args(["a"], "json") == [b'"a"']
    with pytest.raises(CodecError):
        decode_frames([b"not json"], "json")


def test_text_codec():
    """text: frames are UTF-8 text both ways; bytes that are not UTF-8, or an argument that is not a string, are errors."""
    assert decode_frames([b"12"], "text") == ["12"]
    with pytest.raises(CodecError):
        decode_frames([b"\xff"], "text")
    with pytest.raises(CodecError):
        encode_args([1], "text")


def test_binary_codec():
    """binary: frames are bytes as they are, strings are sent as UTF-8, and a structured argument is an error."""
    assert decode_frames([b"12"], "binary") == [b"12"]
    assert encode_args(["a", b"\x00"], "binary") == [b"a", b"\x00"]
    with pytest.raises(CodecError):
        encode_args([{"a": 1}], "binary")


def test_unserializable_argument():
    """An argument JSON cannot carry (NaN) is a CodecError, not a frame."""
    with pytest.raises(CodecError):
        encode_args([float("nan")])
