"""URI -> endpoint resolution and the global allow policy (no network)."""

import pytest

from zmqwamp.auth.policy import EndpointPolicy
from zmqwamp.upstream.endpoints import Endpoint, EndpointResolver, InvalidEndpoint


@pytest.mark.parametrize("uri", ["tcp://127.0.0.1:9999", "tcp://[::1]:5", "tcp://svc-a.local:80", "ipc:///tmp/a.sock", "ipc://rel.sock"])
def test_valid_addresses(uri):
    assert EndpointResolver().resolve(uri).endpoint.address == uri


@pytest.mark.parametrize(
    "uri",
    ["", "foo", "tcp://", "tcp://host", "tcp://host:0", "tcp://host:70000", "tcp://*:5555", "tcp://a b:1",
     "inproc://x", "udp://h:1", "ipc://", "tcp://h:1?fil=x", "tcp://h:1?filter=a&b=c", "x" * 5000, 42, None],
)
def test_invalid_addresses(uri):
    with pytest.raises(InvalidEndpoint):
        EndpointResolver().resolve(uri)


def test_filter_query_is_percent_decoded_bytes():
    target = EndpointResolver().resolve("tcp://h:1?filter=hu%20go%FF")
    assert target.endpoint.address == "tcp://h:1"
    assert target.filter == b"hu go\xff"


def test_alias_resolves_with_its_settings():
    echo = Endpoint("tcp://h:1", kind="req", codec="text", timeout=2.0, alias="echo")
    target = EndpointResolver({"echo": echo}).resolve("echo?filter=x")
    assert target.endpoint is echo and target.filter == b"x"
    assert echo.name == "echo"


def test_policy_denies_by_default():
    assert not EndpointPolicy().allows(Endpoint("tcp://127.0.0.1:1"))


def test_policy_globs_addresses_and_allows_aliases():
    policy = EndpointPolicy(["tcp://127.0.0.1:*"])
    assert policy.allows(Endpoint("tcp://127.0.0.1:9999"))
    assert not policy.allows(Endpoint("tcp://127.0.0.2:9999"))
    assert not policy.allows(Endpoint("ipc:///tmp/x"))
    assert policy.allows(Endpoint("tcp://10.1.1.1:1", alias="echo"))


# -- issue 13: only clean ipc paths, and tcp hosts matched by kind ---------------------------


@pytest.mark.parametrize(
    "uri",
    ["ipc:///run/app/../other.sock", "ipc:///run/app/./x.sock", "ipc:///run//x.sock", "ipc:///run/app/", "ipc://../x.sock",
     "ipc://./x.sock", "ipc://..", "ipc:///run/app/..?filter=x"],
)
def test_ipc_paths_with_dot_segments_or_empty_segments_are_not_endpoints(uri):
    """'.', '..' and empty segments are refused, so allow globs (whose '*' crosses '/') only ever see clean paths."""
    with pytest.raises(InvalidEndpoint, match="'.', '..' or empty segments"):
        EndpointResolver().resolve(uri)


@pytest.mark.parametrize("uri", ["ipc:///run/app/x.sock", "ipc://rel/x.sock", "ipc://@abstract", "ipc:///run/a..b/.x"])
def test_clean_ipc_paths_are_endpoints(uri):
    assert EndpointResolver().resolve(uri).endpoint.address == uri


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


def test_source_address_syntax_is_not_an_endpoint():
    """libzmq's 'tcp://src;dst:port' (bind to a source address first) is refused by the parser."""
    with pytest.raises(InvalidEndpoint):
        EndpointResolver().resolve("tcp://127.0.0.1;10.0.0.1:5555")


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
