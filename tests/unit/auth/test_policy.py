"""zmqwamp.auth.policy: the global allow rules (EndpointPolicy: globs by kind, deny by default), per-user rules and
their {authid} filters, and the Origin allowlist.  Their configuration: tests/unit/service/test_config.py,
tests/unit/service/test_tap.py; the hooks that apply them: tests/unit/service/test_bridge.py.
"""

from __future__ import annotations

import pytest
from twisted.logger import formatEvent

from zmqwamp.auth.cred import SessionAvatar
from zmqwamp.auth.policy import (
    EndpointPolicy,
    OriginPolicy,
    UserRule,
    delimiter_warnings,
    placeholder_delimiters,
    rules_allow,
)
from zmqwamp.service.bridge import Bridge
from zmqwamp.service.config import ConfigError, parse_config
from zmqwamp.upstream.endpoints import Endpoint

X = Endpoint("tcp://127.0.0.1:5555")
Y = Endpoint("tcp://127.0.0.1:6666")
PUB = Endpoint("tcp://127.0.0.1:9000")
ECHO = Endpoint("tcp://10.0.0.1:7777", kind="req", alias="echo")

RULES = """
[[rules]]
authid = "alice"
endpoints = ["tcp://127.0.0.1:5555", "echo"]
actions = ["call"]

[[rules]]
role = ["staff", "admin*"]
endpoints = "tcp://127.0.0.1:*"

[[rules]]
endpoints = ["tcp://127.0.0.1:9000"]
actions = ["subscribe"]
filters = ["{authid}.*", "public.*"]
"""


@pytest.fixture
def rules():
    import tomllib

    return parse_config(tomllib.loads(RULES), "t.toml").rules


def avatar(authid, role="user", rules=(), endpoints=None):
    return SessionAvatar(authid, role, "ticket", "test", rules, endpoints)


# -- the global allow rules --------------------------------------------------------------------------------------------


def test_policy_denies_by_default():
    """No allow rule: nothing is allowed."""
    assert not EndpointPolicy().allows(Endpoint("tcp://127.0.0.1:1"))


def test_policy_globs_addresses_and_allows_aliases():
    """An allow glob lets matching addresses through, not others of the kind or of another transport; aliases always pass."""
    policy = EndpointPolicy(["tcp://127.0.0.1:*"])
    assert policy.allows(Endpoint("tcp://127.0.0.1:9999"))
    assert not policy.allows(Endpoint("tcp://127.0.0.2:9999"))
    assert not policy.allows(Endpoint("ipc:///tmp/x"))
    assert policy.allows(Endpoint("tcp://10.1.1.1:1", alias="echo"))


def test_an_ip_glob_does_not_match_a_host_name_that_starts_like_it():
    """The glob of examples/deploy/zmqwamp.toml: 10.0.0.1.attacker.example is a name, not 10.0.0.x."""
    policy = EndpointPolicy(["tcp://10.0.0.*:*"])
    assert policy.allows(Endpoint("tcp://10.0.0.1:5555"))
    assert not policy.allows(Endpoint("tcp://10.0.0.1.attacker.example:5555"))
    assert not policy.allows(Endpoint("tcp://10.0.0.1.2:5555"))


@pytest.mark.parametrize(
    "address",
    ["tcp://localhost:5555", "tcp://127.1:5555", "tcp://0x7f000001:5555", "tcp://[::ffff:127.0.0.1]:5555",
     "tcp://127.0.0.1.:5555", "tcp://127.000.000.001:5555", "tcp://[127.0.0.1]:5555", "tcp://2130706433:5555"],
)
def test_other_spellings_of_loopback_are_not_allowed_by_an_ip_pattern(address):
    """What held up in the review stays so: under tcp://127.0.0.1:* (and 127.*), only the literal 127.0.0.1 passes."""
    for pattern in ("tcp://127.0.0.1:*", "tcp://127.*:*", "tcp://127.0.0.*:*"):
        assert not EndpointPolicy([pattern]).allows(Endpoint(address)), (pattern, address)


@pytest.mark.parametrize(
    "pattern, address, allowed",
    [
        ("tcp://*.example.com:*", "tcp://a.example.com:1", True),
        ("tcp://*.example.com:*", "tcp://10.0.0.1:1", False),
        ("tcp://svc-[a-z]*:80", "tcp://svc-abc:80", True),
        ("tcp://svc-[a-z]*:80", "tcp://svc-abc:81", False),
        ("tcp://*:*", "tcp://anything.example:1", True),
        ("tcp://*:*", "tcp://10.1.2.3:1", True),
        ("tcp://*", "tcp://anything.example:1", True),
        ("*", "tcp://anything.example:1", True),
        ("*://10.0.0.*:*", "tcp://10.0.0.1.attacker.example:1", False),
        ("*10.0.0.*", "tcp://10.0.0.1:1", False),  # a tcp pattern must say tcp:// (or be '*')
        ("tcp://10.0.0.1*", "tcp://10.0.0.12:9", True),  # no port in the pattern: any port
        ("tcp://10.0.0.[1-3]:*", "tcp://10.0.0.2:1", True),
        ("tcp://[::1]:*", "tcp://[::1]:5", True),
        ("tcp://[fd00::*]:*", "tcp://[FD00::5]:5", True),
        ("tcp://[fd00::*]:*", "tcp://fd00.example:5", False),
        ("tcp://127.0.0.1:9*", "tcp://127.0.0.1:9999", True),
        ("tcp://127.0.0.1:9*", "tcp://127.0.0.1:8999", False),
        ("ipc:///run/*", "ipc:///run/app/x.sock", True),
        ("ipc:///run/*", "tcp://127.0.0.1:5", False),
    ],
)
def test_tcp_patterns_match_host_and_port_by_kind(pattern, address, allowed):
    """IP globs match IP literals, name globs (a letter outside [...]) match names, a bare '*' host matches both."""
    assert EndpointPolicy([pattern]).allows(Endpoint(address)) is allowed


# -- per-user rules ----------------------------------------------------------------------------------------------------


def test_rules_parse(rules):
    """[[rules]]: strings or lists; actions default to both; filters None unless given."""
    assert rules[0] == UserRule(endpoints=("tcp://127.0.0.1:5555", "echo"), authids=("alice",), actions=("call",))
    assert rules[1].roles == ("staff", "admin*") and rules[1].actions == ("call", "subscribe") and rules[1].filters is None
    assert rules[2].authids == () and rules[2].filters == ("{authid}.*", "public.*")


def test_alice_may_call_x_bob_may_not(rules):
    """A rule per authid: alice calls X and the alias echo; bob (plain user) reaches neither."""
    alice, bob = avatar("alice", rules=rules), avatar("bob", rules=rules)
    assert alice.zmq_allowed("call", X, {}) and alice.zmq_allowed("call", ECHO, {})
    assert not alice.zmq_allowed("call", Y, {})
    assert not alice.zmq_allowed("subscribe", X, {"filter": b""})
    assert not bob.zmq_allowed("call", X, {})


def test_rule_by_role_glob(rules):
    """A role rule with a glob: staff and admin-eu reach every 127.0.0.1 endpoint, for both actions."""
    for role in ("staff", "admin-eu"):
        a = avatar("carol", role, rules)
        assert a.zmq_allowed("call", Y, {}) and a.zmq_allowed("subscribe", Y, {"filter": b"x"})
    assert not avatar("carol", "staffer", rules).zmq_allowed("call", Y, {})


def test_filter_must_start_with_own_authid(rules):
    """filters = ["{authid}.*"]: bob subscribes to 'bob.' prefixes and public ones, not alice's nor everything."""
    bob = avatar("bob", rules=rules)
    assert bob.zmq_allowed("subscribe", PUB, {"filter": b"bob.inbox"})
    assert bob.zmq_allowed("subscribe", PUB, {"filter": b"public.news"})
    assert not bob.zmq_allowed("subscribe", PUB, {"filter": b"alice.inbox"})
    assert not bob.zmq_allowed("subscribe", PUB, {"filter": b""})
    assert not bob.zmq_allowed("subscribe", PUB, {"filter": b"bob"})  # 'bob' would also match 'bobby.*'


def test_authid_with_glob_characters_does_not_widen_a_rule(rules):
    """An authid like '*' or 'a[' is matched literally inside {authid}."""
    star = avatar("*", rules=rules)
    assert not star.zmq_allowed("subscribe", PUB, {"filter": b"alice.inbox"})
    assert star.zmq_allowed("subscribe", PUB, {"filter": b"*.x"})
    assert avatar("a[", rules=rules).zmq_allowed("subscribe", PUB, {"filter": b"a[.x"})


def test_non_utf8_filter_only_matches_wildcards():
    """A binary filter is compared as text with surrogate escapes: only '*' style patterns match it."""
    rule = UserRule(endpoints=("*",), actions=("subscribe",), filters=("*",))
    assert rules_allow([rule], "a", "user", "subscribe", PUB, b"\xff\x00")
    rule = UserRule(endpoints=("*",), actions=("subscribe",), filters=("{authid}/*",))
    assert not rules_allow([rule], "a", "user", "subscribe", PUB, b"\xff\x00")


def test_no_rules_means_global_rules_only():
    """Without [[rules]], the avatar allows whatever the global --allow allows."""
    assert avatar("bob").zmq_allowed("call", X, {})


def test_credential_endpoints_narrow_further(rules):
    """Endpoint globs from the credential (a JWT claim) narrow: both they and the rules must allow."""
    a = avatar("alice", rules=rules, endpoints=["tcp://127.0.0.1:5555"])
    assert a.zmq_allowed("call", X, {})
    assert not a.zmq_allowed("call", ECHO, {})  # a rule allows it, the claim does not
    assert not avatar("bob", rules=(), endpoints=[]).zmq_allowed("call", X, {})


def test_a_users_ipc_rule_cannot_be_left_with_dot_dot():
    """ipc:///run/users/{authid}/*: alice cannot reach bob's socket through .../alice/../bob/...; the path
    is refused before any rule sees it (the glob alone, whose '*' crosses '/', would have matched)."""
    from fnmatch import fnmatchcase

    from zmqwamp.upstream.endpoints import EndpointResolver, InvalidEndpoint

    rule = UserRule(endpoints=("ipc:///run/users/{authid}/*",))
    escape = "ipc:///run/users/alice/../bob/feed.sock"
    assert fnmatchcase(escape, "ipc:///run/users/alice/*")  # why the path itself must be refused
    with pytest.raises(InvalidEndpoint):
        EndpointResolver().resolve(escape)
    alice = avatar("alice", rules=[rule])
    assert alice.zmq_allowed("subscribe", Endpoint("ipc:///run/users/alice/feed.sock"), {"filter": b""})
    assert not alice.zmq_allowed("subscribe", Endpoint("ipc:///run/users/bob/feed.sock"), {"filter": b""})


def test_rule_and_credential_globs_match_tcp_hosts_by_kind():
    """A rule's (or a JWT's zmq_endpoints) IP glob does not match host names; an alias is matched by its name."""
    rule = UserRule(endpoints=("tcp://10.0.0.*:*", "ech?"))
    a = avatar("alice", rules=[rule], endpoints=["tcp://10.0.0.*:*", "echo"])
    assert a.zmq_allowed("call", Endpoint("tcp://10.0.0.5:1"), {})
    assert not a.zmq_allowed("call", Endpoint("tcp://10.0.0.5.attacker.example:1"), {})
    assert a.zmq_allowed("call", ECHO, {})
    # a plain address is not matched as if it were an alias name
    assert not rules_allow([UserRule(endpoints=("*.attacker.example:1",))], "a", "user", "call", Endpoint("tcp://10.0.0.5.attacker.example:1"), None)


# -- issue 21, item 7: {authid} filters that let one authid read another's ---------------------------------------------


JOHNS = """
[[rules]]
endpoints = ["tcp://127.0.0.1:9000"]
actions = ["subscribe"]
filters = ["{authid}.*", "public.*"]

[[rules]]
endpoints = ["tcp://127.0.0.1:9001"]
actions = ["subscribe"]
filters = ["{authid}/*", "{authrole}:{authid}/*"]
"""


PUB2 = Endpoint("tcp://127.0.0.1:9001")


@pytest.mark.parametrize(
    "glob", ["{authid}", "{authid}*", "x.{authid}?", "{authid}[.]*", "{authid}{authrole}/*", "{authrole}*"]
)
def test_a_placeholder_must_be_followed_by_a_literal_delimiter(glob):
    """At the end, before a glob character or another placeholder, {authid} is prefix-leaky by construction
    (ZeroMQ filters are prefixes: 'john' gets 'johnny...'): a config error, for the file and for Bridge(...).
    Before: accepted."""
    import tomllib

    text = f'[[rules]]\nendpoints = ["*"]\nactions = ["subscribe"]\nfilters = ["public/*", "{glob}"]\n'
    with pytest.raises(ConfigError, match=r"z.toml: rules\[0\].filters: \{auth(id|role)\} in .* must be followed by a "):
        parse_config(tomllib.loads(text), "z.toml")
    with pytest.raises(ConfigError, match=r"options: rules\[0\].filters: "):
        Bridge(rules=[UserRule(endpoints=("*",), actions=("subscribe",), filters=(glob,))])


def test_delimiters_are_read_from_each_placeholder():
    """Each {authid}/{authrole} placeholder's delimiter is the literal character after it (None: a glob character follows)."""
    assert placeholder_delimiters("{authrole}:{authid}/*") == (("authrole", ":"), ("authid", "/"))
    assert placeholder_delimiters("{authid}*") == (("authid", None),)
    assert placeholder_delimiters("public.*") == ()


def test_a_filter_rule_never_serves_an_authid_that_holds_its_delimiter(log_events):
    """With '{authid}.*', john and john.smith would overlap: john.smith is denied under it (one warning saying
    why, however often he asks), john keeps his.  With '{authid}/*' both are served, apart.  Before: john.smith
    could subscribe to 'john.smith.inbox' (and john to it as well, and john's 'john.' got john.smith's)."""
    import tomllib

    rules = parse_config(tomllib.loads(JOHNS), "t.toml").rules
    john, smith = avatar("john", rules=rules), avatar("john.smith", rules=rules)
    assert john.zmq_allowed("subscribe", PUB, {"filter": b"john.inbox"})
    for _ in range(3):
        assert not smith.zmq_allowed("subscribe", PUB, {"filter": b"john.smith.inbox"})
    assert smith.zmq_allowed("subscribe", PUB, {"filter": b"public.news"})  # the rule's other filters still apply
    warnings = [formatEvent(e) for e in log_events if "does not apply" in formatEvent(e)]
    assert warnings == [
        "rule filter '{authid}.*' does not apply to authid 'john.smith': it contains '.', the delimiter that follows "
        "{authid} there, so it could read what is meant for others; use a delimiter authids cannot contain (e.g. '/')"
    ]
    assert smith.zmq_allowed("subscribe", PUB2, {"filter": b"john.smith/inbox"})
    assert john.zmq_allowed("subscribe", PUB2, {"filter": b"john/inbox"})
    assert not john.zmq_allowed("subscribe", PUB2, {"filter": b"john.smith/inbox"})
    assert not avatar("x", "a:b", rules).zmq_allowed("subscribe", PUB2, {"filter": b"a:b:x/1"})  # role holds ':'
    assert avatar("x", "staff", rules).zmq_allowed("subscribe", PUB2, {"filter": b"staff:x/1"})


def test_users_that_a_rule_never_serves_are_named_at_load():
    """delimiter_warnings: for each filter glob, the users file's authids (and roles) it refuses, by rule index."""
    import tomllib

    rules = parse_config(tomllib.loads(JOHNS), "t.toml").rules
    warnings = delimiter_warnings(rules, [("john", "user"), ("john.smith", "user"), ("ann", "a:b")])
    assert warnings == [
        "rules[0].filters '{authid}.*' never applies to authid 'john.smith': they contain the delimiter that follows "
        "the placeholder, so their subscriptions under it are denied; use a delimiter that authids and roles "
        "cannot contain (e.g. '/')",
        "rules[1].filters '{authrole}:{authid}/*' never applies to authrole 'a:b': they contain the delimiter that "
        "follows the placeholder, so their subscriptions under it are denied; use a delimiter that authids and "
        "roles cannot contain (e.g. '/')",
    ]
    assert delimiter_warnings(rules, [("john", "user")]) == []


# -- origins -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin, host, secure, allowed",
    [
        (None, "bridge:8080", False, True),  # no Origin: a non-browser client
        ("", "bridge:8080", False, True),
        ("http://bridge:8080", "bridge:8080", False, True),  # same origin
        ("https://bridge.example", "bridge.example", True, True),  # TLS here or at a proxy that says so
        ("http://BRIDGE:8080", "bridge:8080", False, True),
        ("http://bridge:8081", "bridge:8080", False, False),
        ("http://evil.example", "bridge:8080", False, False),
        ("http://bridge:8080.evil.example", "bridge:8080", False, False),
        ("null", "bridge:8080", False, False),
        ("https://app.example.com", "bridge:8080", False, True),  # listed
        ("https://x.apps.example.com", "bridge:8080", False, True),  # glob
        ("https://apps.example.com.evil", "bridge:8080", False, False),
        ("http://app.example.com", "bridge:8080", False, False),  # scheme matters
        # issue 21 item 12: same-origin is the scheme too (ws <-> http, wss <-> https)
        ("https://bridge:8080", "bridge:8080", False, False),  # an https page, a plain ws:// connection
        ("http://bridge:8443", "bridge:8443", True, False),  # an http page, a wss:// connection
        ("https://bridge.example", "bridge.example", False, False),  # TLS at a proxy that does not say so
        ("wss://bridge:8443", "bridge:8443", True, True),
        ("ws://bridge:8080", "bridge:8080", False, True),
    ],
)
def test_origin_policy(origin, host, secure, allowed):
    """Same-origin and no-Origin requests pass; other Origins only when listed (globs)."""
    policy = OriginPolicy(["https://app.example.com", "https://*.apps.example.com/"])
    assert policy.allows(origin, host, secure) is allowed


def test_null_and_star_origins_must_be_listed():
    """'null' passes only when listed; '*' allows every Origin."""
    assert OriginPolicy(["null"]).allows("null", "h")
    assert OriginPolicy(["*"]).allows("http://evil.example", "h")
