"""zmqwamp.service.descriptions: Twisted's endpoint description syntax, by Twisted's private parser or our copy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.endpoints import _parse as twisted_parse

from zmqwamp import internals
from zmqwamp.service import descriptions
from zmqwamp.service.descriptions import description_fields, split

DESCRIPTIONS = [
    ("tcp:8080", ("tcp", ["8080"], {})),
    ("tcp:port=8080:interface=127.0.0.1", ("tcp", [], {"port": "8080", "interface": "127.0.0.1"})),
    ("tcp6:8080:interface=\\:\\:1", ("tcp6", ["8080"], {"interface": "::1"})),
    ("TCP:8080:backlog=7", ("tcp", ["8080"], {"backlog": "7"})),
    ("unix:/run/zmqwamp.sock:mode=660", ("unix", ["/run/zmqwamp.sock"], {"mode": "660"})),
    ("unix:address=/tmp/a\\:b\\\\c.sock", ("unix", [], {"address": "/tmp/a:b\\c.sock"})),
    ("ssl:8443:privateKey=/etc/k.pem:extraCertChain=a=b", ("ssl", ["8443"], {"privateKey": "/etc/k.pem", "extraCertChain": "a=b"})),
    ("systemd:domain=INET:index=0", ("systemd", [], {"domain": "INET", "index": "0"})),
    ("tcp:", ("tcp", [""], {})),
    ("", ("", [], {})),
]


@pytest.mark.parametrize("description, fields", DESCRIPTIONS)
def test_the_fields_of_a_description(description, fields):
    """What Twisted's parser (this Twisted has it) gives, and what our copy of its rules gives, are the fields."""
    assert descriptions._parse is twisted_parse
    assert description_fields(description) == fields
    assert split(description) == twisted_parse(description)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=":=\\ab1é", max_size=20))
def test_our_copy_splits_as_twisted_does(description):
    """Differential: any description is split as Twisted's parser splits it (but those it fails on: a lone
    backslash at the end, a key not ASCII; serverFromString refuses them first)."""
    try:
        expected = twisted_parse(description)
    except (RuntimeError, UnicodeEncodeError):  # its tokenizer's next() past the end; nativeString(key)
        return
    assert split(description) == expected


def test_without_twisteds_parser_ours_is_used(monkeypatch, log_events):
    """A Twisted without twisted.internet.endpoints._parse: our copy, one warning; the same fields."""
    monkeypatch.setattr(descriptions, "TWISTED_PARSER", ("twisted.internet.endpoints", "_renamed_parse"))
    monkeypatch.setattr(internals, "_warned", set())
    assert descriptions.parser() is split
    assert [e["missing"] for e in log_events if e.get("what") == "twisted.internet.endpoints"] == ["_renamed_parse"]
    monkeypatch.setattr(descriptions, "_parse", descriptions.parser())
    for description, fields in DESCRIPTIONS:
        assert description_fields(description) == fields
