"""zmqwamp.upstream.reader: pyzmq's Cython socket methods, and the public ones without them (zmqwamp.internals).

The one unit test here with real zmq sockets: in-process (inproc://), no network.
"""

from __future__ import annotations

import pytest
import zmq
from twisted.internet.testing import MemoryReactorClock

from zmqwamp import internals
from zmqwamp.testing import fired
from zmqwamp.upstream import forwarder, reader
from zmqwamp.upstream.forwarder import UpstreamRequestConnection
from zmqwamp.upstream.reader import BridgeZmqFactory, cython_socket_method


def test_the_cython_methods_are_used_when_pyzmq_has_them():
    """The hot paths read and send with pyzmq's Cython methods (zmq.backend.Socket), not its sugar layer."""
    assert cython_socket_method("recv") is zmq.backend.Socket.recv
    assert reader._recv is zmq.backend.Socket.recv and forwarder._send is zmq.backend.Socket.send


@pytest.fixture
def no_cython_socket(monkeypatch):
    """A pyzmq whose zmq.backend has no Socket (a backend renamed or moved)."""
    monkeypatch.delattr(zmq.backend, "Socket")
    monkeypatch.setattr(internals, "_warned", set())


def test_without_pyzmqs_cython_socket_the_public_methods_are_used(no_cython_socket, log_events):
    """Without zmq.backend.Socket: zmq.Socket's recv and send, one warning per method."""
    assert cython_socket_method("recv") is zmq.Socket.recv
    assert cython_socket_method("send") is zmq.Socket.send
    cython_socket_method("recv")
    assert [e["missing"] for e in log_events if e.get("what") == "zmq.backend"] == ["Socket.recv", "Socket.send"]


def test_without_pyzmqs_cython_socket_a_request_and_its_reply_still_go_through(no_cython_socket, monkeypatch):
    """A request sent and its multipart reply read with the public methods: the same frames, matched as before."""
    monkeypatch.setattr(reader, "_recv", cython_socket_method("recv"))
    monkeypatch.setattr(forwarder, "_send", cython_socket_method("send"))
    clock = MemoryReactorClock()
    factory = BridgeZmqFactory(clock)
    backend = factory.context.socket(zmq.ROUTER)
    backend.bind("inproc://backend")
    connection = UpstreamRequestConnection(factory, "inproc://backend", lambda *_: None)
    connection.connect("inproc://backend")
    try:
        d = connection.sendMsg([b"ask", b"me"], 5.0)
        clock.advance(0)  # the batch of requests goes out at the end of the reactor iteration
        assert backend.poll(5000)
        identity, msg_id, empty, *frames = backend.recv_multipart()
        assert (empty, frames) == (b"", [b"ask", b"me"])
        backend.send_multipart([identity, msg_id, b"", b"answer", b"in two"])
        assert connection.socket.poll(5000)
        connection.doRead()
        assert fired(d) == [b"answer", b"in two"]
    finally:
        connection.shutdown()
        backend.close(linger=0)
        factory.shutdown()
