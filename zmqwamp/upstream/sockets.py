"""The one path that opens (and closes) every ZeroMQ connection the bridge makes on a client's behalf.

Opening is the rare path, and where the checks are; :meth:`UpstreamSockets.open` does, in order:

1. charge the socket to the session whose request opens it in the
   :class:`~zmqwamp.upstream.budget.UpstreamBudget` (which may close the least recently used idle
   connection to make room, or refuse: :class:`~zmqwamp.upstream.errors.LimitExceeded`);
2. make the txZMQ connection (a :class:`~zmq.ZMQError`, such as too many sockets:
   :class:`~zmqwamp.upstream.endpoints.InvalidEndpoint`, and the charge is released);
3. count it in ``zmqwamp_zmq_sockets_open{kind}``;
4. connect it: at once for an ipc path or an IP address (or a host name in the
   :class:`~zmqwamp.upstream.resolver.HostResolver`'s cache), else when the name has resolved; what is
   sent meanwhile waits in the connection.  A name that does not resolve (or an address that cannot
   be connected) fails what waited with :class:`~zmqwamp.upstream.errors.BackendUnavailable` and
   closes the connection: raised at once if known at once, else through the connection's
   :meth:`~UpstreamConnection.fail`, after its owner was told (``lost``).

:meth:`UpstreamSockets.close` undoes 1 and 3 and closes the socket.

A kind of connection is a subclass of :class:`UpstreamConnection` (its ``kind``, its zmq
``socketType``, what it does with what waits for it: :meth:`~UpstreamConnection.connect` and
:meth:`~UpstreamConnection.fail`) and one call to :meth:`UpstreamSockets.open`.  Today's kinds:
``req`` (:class:`~zmqwamp.upstream.forwarder.UpstreamRequestConnection`) and ``sub``
(:class:`~zmqwamp.upstream.hub.UpstreamSubConnection`).  Nothing here runs per message.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, ClassVar, TypeVar

import zmq
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from txzmq import ZmqConnection, ZmqEndpoint, ZmqEndpointType

from zmqwamp.metrics import BridgeMetrics
from zmqwamp.upstream.budget import UpstreamBudget
from zmqwamp.upstream.endpoints import InvalidEndpoint
from zmqwamp.upstream.errors import BackendUnavailable
from zmqwamp.upstream.reader import BatchedRead, BridgeZmqFactory
from zmqwamp.upstream.resolver import HostResolver, NameNotResolved

log = Logger()


class UpstreamConnection(BatchedRead, ZmqConnection):
    """A txZMQ connection to one upstream address, read in batches, opened by :meth:`UpstreamSockets.open`.

    Made not connected: :meth:`connect` comes once the address's host name (if any) has
    resolved.  A subclass says what its users wait for meanwhile, and lets them through
    (:meth:`connect`) or fails them (:meth:`fail`).
    """

    kind: ClassVar[str]  # "req", "sub": the zmqwamp_zmq_sockets_open label, and the budget's key
    budget_key: Hashable  # what it is charged under in the UpstreamBudget (set by UpstreamSockets.open)

    def __init__(self, factory: BridgeZmqFactory, address: str) -> None:
        self.address = address
        super().__init__(factory)

    @property
    def closed(self) -> bool:
        """Shut down (txZMQ drops the factory then)."""
        return self.factory is None

    def connect(self, target: str) -> None:
        """Connect the socket to ``target`` (the address, its name resolved); a subclass then lets its waiters go."""
        self.addEndpoints([ZmqEndpoint(ZmqEndpointType.connect, target)])

    def fail(self, reason: BackendUnavailable) -> None:
        """The connection could not be made, and is closed: fail what waited for it (nothing, here)."""


C = TypeVar("C", bound=UpstreamConnection)


class UpstreamSockets:
    """Opens and closes the bridge's upstream connections: the budget, the socket gauge, host names.

    One per bridge, shared by the forwarder and the hub (and each future kind of
    endpoint); each keeps the connections it opened and closes them through here.
    """

    def __init__(
        self,
        zmq_factory: BridgeZmqFactory,
        metrics: BridgeMetrics,
        budget: UpstreamBudget | None = None,
        names: HostResolver | Any = None,
    ) -> None:
        """``names``: a :class:`HostResolver` or anything with its ``connect_address`` (tests)."""
        self.zmq_factory = zmq_factory
        self.metrics = metrics
        self.budget = budget if budget is not None else UpstreamBudget()
        self.names = names if names is not None else HostResolver(zmq_factory.reactor, metrics=metrics)

    def open(
        self,
        connection_type: type[C],
        address: str,
        owner: object,
        lost: Callable[[C], None],
        *args: Any,
        slot: Hashable = None,
    ) -> C:
        """A new ``connection_type(zmq_factory, address, *args)``, charged to ``owner`` (a session; None: nobody's).

        Connected at once, or when its host name has resolved; if it then cannot be,
        ``lost(connection)`` is called (its owner forgets it), the connection is closed and
        its :meth:`~UpstreamConnection.fail` fails what waited.  ``slot`` tells apart several
        connections of one kind to one address (a pool).

        Raises :class:`~zmqwamp.upstream.errors.LimitExceeded` (the budget),
        :class:`~zmqwamp.upstream.endpoints.InvalidEndpoint` (ZeroMQ refused the socket or
        the address) or :class:`~zmqwamp.upstream.errors.BackendUnavailable` (the name is
        known not to resolve); nothing is left open or charged then.
        """
        kind = connection_type.kind
        key = (kind, address) if slot is None else (kind, address, slot)
        self.budget.charge(key, owner)
        try:
            connection = connection_type(self.zmq_factory, address, *args)
        except zmq.ZMQError as e:
            self.budget.release(key)
            raise InvalidEndpoint(f"cannot connect to {address}: {e.strerror}") from None
        connection.budget_key = key
        self.metrics.zmq_sockets.labels(kind).inc()
        try:
            target = self.names.connect_address(address)
            if not isinstance(target, Deferred):
                connection.connect(target)
        except NameNotResolved as e:
            self.close(connection)
            raise BackendUnavailable(f"cannot connect to {address}: {e}") from None
        except zmq.ZMQError as e:
            self.close(connection)
            raise InvalidEndpoint(f"cannot connect to {address}: {e.strerror}") from None
        label = kind.upper()
        if isinstance(target, Deferred):
            target.addCallbacks(
                self._resolved, self._unresolved, callbackArgs=(connection, lost), errbackArgs=(connection, lost)
            )
            if connection.closed:  # a lookup that had already failed (a resolver's stand-in)
                raise BackendUnavailable(f"cannot connect to {address}: its host name did not resolve")
            log.info("zmq {kind} connection to {address} opened (resolving its host name)", kind=label, address=address)
        else:
            log.info("zmq {kind} connection to {address} opened", kind=label, address=address)
        return connection

    def _resolved(self, target: str, connection: C, lost: Callable[[C], None]) -> None:
        if connection.closed:
            return  # its owner closed it while its name was being resolved
        try:
            connection.connect(target)
        except zmq.ZMQError as e:
            self._unresolved(Failure(BackendUnavailable(f"cannot connect to {target}: {e.strerror}")), connection, lost)
            return
        log.info(
            "zmq {kind} connection to {address} connected to {target}",
            kind=connection.kind.upper(),
            address=connection.address,
            target=target,
        )

    def _unresolved(self, failure: Failure, connection: C, lost: Callable[[C], None]) -> None:
        """The connection cannot be made: its owner forgets it, it closes, what waited for it fails."""
        if connection.closed:
            return
        reason = BackendUnavailable(f"cannot connect to {connection.address}: {failure.getErrorMessage()}")
        lost(connection)
        self.close(connection)
        connection.fail(reason)

    def close(self, connection: UpstreamConnection, why: str | None = None) -> None:
        """Close ``connection`` and stop charging for it (``why``: logged); nothing if it is closed already."""
        if connection.closed:
            return
        connection.shutdown()
        self.metrics.zmq_sockets.labels(connection.kind).dec()
        self.budget.release(connection.budget_key)
        if why is not None:
            log.info(
                "zmq {kind} connection to {address} closed ({why})",
                kind=connection.kind.upper(),
                address=connection.address,
                why=why,
            )
