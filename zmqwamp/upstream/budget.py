"""The zmq sockets the bridge opens on clients' behalf, bounded per session, per client address and in total.

Asked by the forwarder and the hub when they open a zmq socket; over a limit the request fails with
:class:`~zmqwamp.upstream.errors.LimitExceeded` (ERROR ``zmqwamp.error.limit_exceeded`` to the client).  At a
limit, idle REQ connections are closed first to make room.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable

from zmqwamp.peers import peer_host
from zmqwamp.upstream.errors import LimitExceeded


def session_peer(session) -> str:
    """The peer address a session's upstream connections are counted under (the one place that says so)."""
    return peer_host(getattr(session, "peer", None) or "")


# reclaim(predicate): close the least recently used idle connection whose key passes ``predicate``;
# True if one was closed.
Reclaimer = Callable[[Callable[[Hashable], bool]], bool]


class UpstreamBudget:
    """The zmq sockets the bridge opens on clients' behalf, bounded per session, per peer and in total.

    Each socket is charged to the session (and that session's peer address) whose
    CALL or SUBSCRIBE opened it, until the socket closes: a REQ connection stays open
    ``idle_close`` seconds after its last call, so counting calls in flight would not
    bound the sockets.  Requests on a socket that is already open cost nothing here.
    At a limit, the least recently used idle REQ connection that counts against it
    is closed to make room (the ``reclaim`` hook, set by the forwarder; a later call
    reopens it); if there is none, :class:`LimitExceeded`.
    """

    def __init__(self, max_per_session: int = 32, max_per_peer: int = 128, max_total: int = 512) -> None:
        self.max_per_session = max_per_session
        self.max_per_peer = max_per_peer
        self.max_total = max_total
        self.reclaim: Reclaimer | None = None
        self._charges: dict[Hashable, tuple[object, str | None]] = {}  # key -> (session or None, peer or None)
        self._sessions: Counter = Counter()
        self._peers: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return len(self._charges)

    def charged(self, session) -> int:
        """Open sockets charged to ``session``."""
        return self._sessions[session]

    def charge(self, key: Hashable, session=None) -> None:
        """Count a socket about to open for ``session`` (None: nobody's); raise :class:`LimitExceeded` if it cannot."""
        if key in self._charges:
            raise ValueError(f"{key!r} is already charged")
        peer = None
        if session is not None:
            peer = session_peer(session)
            self._make_room(
                lambda: self._sessions[session] >= self.max_per_session,
                lambda k: self._charges[k][0] is session,
                "max_endpoints_per_session",
                f"this session already has {self.max_per_session} zmq connections open",
            )
            self._make_room(
                lambda: self._peers[peer] >= self.max_per_peer,
                lambda k: self._charges[k][1] == peer,
                "max_endpoints_per_peer",
                f"sessions from this address already have {self.max_per_peer} zmq connections open",
            )
        self._make_room(
            lambda: len(self._charges) >= self.max_total,
            lambda k: True,
            "max_zmq_sockets",
            f"the bridge already has {self.max_total} zmq connections open",
        )
        self._charges[key] = (session, peer)
        if session is not None and peer is not None:
            self._sessions[session] += 1
            self._peers[peer] += 1

    def _make_room(self, full: Callable[[], bool], counts: Callable[[Hashable], bool], limit: str, text: str) -> None:
        while full():
            if self.reclaim is None or not self.reclaim(counts):
                raise LimitExceeded(limit, text)

    def release(self, key: Hashable) -> None:
        """The socket charged under ``key`` is closed (or never opened)."""
        session, peer = self._charges.pop(key)
        if session is not None and peer is not None:
            _uncount(self._sessions, session)
            _uncount(self._peers, peer)


def _uncount(counter: Counter, key) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
