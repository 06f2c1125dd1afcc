"""URI -> endpoint resolution and the global allow policy (no network)."""

import pytest

from zmqwamp.endpoints import Endpoint, EndpointResolver, InvalidEndpoint
from zmqwamp.policy import EndpointPolicy


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
