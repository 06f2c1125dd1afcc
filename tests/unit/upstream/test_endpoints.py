"""zmqwamp.upstream.endpoints: URI -> endpoint resolution (addresses, aliases, the ``?filter=`` query), no network.
Which endpoints the allow rules let through: tests/unit/auth/test_policy.py."""

import pytest

from zmqwamp.upstream.endpoints import Endpoint, EndpointResolver, InvalidEndpoint


@pytest.mark.parametrize("uri", ["tcp://127.0.0.1:9999", "tcp://[::1]:5", "tcp://svc-a.local:80", "ipc:///tmp/a.sock", "ipc://rel.sock"])
def test_valid_addresses(uri):
    """tcp host:port (IPv4, bracketed IPv6, names) and ipc paths resolve to themselves."""
    assert EndpointResolver().resolve(uri).endpoint.address == uri


@pytest.mark.parametrize(
    "uri",
    ["", "foo", "tcp://", "tcp://host", "tcp://host:0", "tcp://host:70000", "tcp://*:5555", "tcp://a b:1",
     "inproc://x", "udp://h:1", "ipc://", "tcp://h:1?fil=x", "tcp://h:1?filter=a&b=c", "x" * 5000, 42, None],
)
def test_invalid_addresses(uri):
    """Anything else is InvalidEndpoint: no port or port 0, wildcards, spaces, other transports, other queries, not a string."""
    with pytest.raises(InvalidEndpoint):
        EndpointResolver().resolve(uri)


def test_filter_query_is_percent_decoded_bytes():
    """?filter= is taken off the address and percent-decoded to bytes (any byte, not only UTF-8)."""
    target = EndpointResolver().resolve("tcp://h:1?filter=hu%20go%FF")
    assert target.endpoint.address == "tcp://h:1"
    assert target.filter == b"hu go\xff"


def test_alias_resolves_with_its_settings():
    """An alias resolves to its configured endpoint (kind, codec, timeout), named by the alias, with the URI's filter."""
    echo = Endpoint("tcp://h:1", kind="req", codec="text", timeout=2.0, alias="echo")
    target = EndpointResolver({"echo": echo}).resolve("echo?filter=x")
    assert target.endpoint is echo and target.filter == b"x"
    assert echo.name == "echo"


# -- issue 13: only clean ipc paths ---------------------------------------------------------


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
    """ipc paths without '.', '..' or empty segments (absolute, relative, abstract) are endpoints."""
    assert EndpointResolver().resolve(uri).endpoint.address == uri


def test_source_address_syntax_is_not_an_endpoint():
    """libzmq's 'tcp://src;dst:port' (bind to a source address first) is refused by the parser."""
    with pytest.raises(InvalidEndpoint):
        EndpointResolver().resolve("tcp://127.0.0.1;10.0.0.1:5555")
