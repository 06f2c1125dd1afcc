"""The bridge as Twisted services: listening, the stop order and the drain, signals.

* :class:`ListeningPort`: one listen endpoint; a port that cannot be bound
  stops the start with one clear line (:func:`exit_cannot_listen`).
* :class:`DrainService`: on stop, refuses new sessions and calls, waits for the
  calls in flight (up to ``drain_time``), says GOODBYE to every session, waits
  for the WebSocket connections to close (up to :attr:`DrainService.CLOSE_GRACE`)
  and closes the ZeroMQ side.  It waits on Deferreds that fire when the last
  call ends and when the last WebSocket closes.
* :class:`BridgeService`: the top service.  twistd stops every child of a
  MultiService at once, which would close the listening ports at the first
  instant of a drain, so a proxy would only see the node vanish; here the
  :class:`DrainService` drains first while the ports keep listening (``/healthz``
  answers 503, a new WebSocket upgrade gets HTTP 503: :mod:`zmqwamp.transport.site`), and
  the listeners close after it.
* :class:`Status`: what ``/healthz`` shows (:class:`zmqwamp.transport.site.BridgeStatus`), and what the
  gauges of ``/metrics`` read when scraped and the samples of ``/status`` read.
* :class:`ReactorLagMonitor`: how late the reactor runs a timer, so a stall shows
  whatever caused it (``zmqwamp_reactor_lag_seconds``, a warning past
  ``reactor_lag_warning``).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, TimeoutError, maybeDeferred
from twisted.internet.error import CannotListenError, ReactorNotRunning
from twisted.internet.interfaces import IListeningPort, IReactorTime, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from zmqwamp.metrics import BridgeMetrics
from zmqwamp.service.logs import use_log_format
from zmqwamp.transport.guard import ConnectionCounter
from zmqwamp.upstream.endpoints import Endpoint, EndpointResolver
from zmqwamp.upstream.forwarder import RequestForwarder
from zmqwamp.upstream.hub import SubscriptionHub
from zmqwamp.upstream.reader import BridgeZmqFactory
from zmqwamp.upstream.resolver import HostResolver
from zmqwamp.wamp.ports import Forwarder
from zmqwamp.wamp.registry import SessionRegistry

log = Logger()


class ListeningPort(Service):
    """Listens on ``endpoint`` while running; a port that cannot be bound fails the start at once.

    (Twisted's ``StreamServerEndpointService`` reports it only later, unless a
    private attribute is set.)  Every endpoint this bridge listens on (tcp, ssl,
    unix, haproxy) answers ``listen`` at once.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, factory: Any) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        outcome: list[Any] = []
        self.endpoint.listen(self.factory).addBoth(outcome.append)
        if not outcome:
            raise RuntimeError(f"{self.endpoint!r} did not listen at once")
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        self.port = outcome[0]

    def stopService(self) -> Deferred | None:
        super().stopService()
        port, self.port = self.port, None
        return maybeDeferred(port.stopListening) if port is not None else None


class DrainService(Service):
    """Owns the ZeroMQ side and the shutdown order (see the module's docstring)."""

    CLOSE_GRACE = 3.0

    def __init__(
        self,
        registry: SessionRegistry,
        connections: ConnectionCounter,
        *,
        forwarder: RequestForwarder,
        hub: SubscriptionHub,
        zmq_factory: BridgeZmqFactory,
        names: HostResolver,
        clock: IReactorTime,
        drain_time: float,
    ) -> None:
        self.registry = registry
        self.connections = connections
        self.forwarder = forwarder
        self.hub = hub
        self.zmq_factory = zmq_factory
        self.names = names
        self.clock = clock
        self.drain_time = drain_time

    def stopService(self) -> Deferred:
        super().stopService()
        self.registry.stopping = True
        log.info(
            "stopping: draining {n} call(s) in flight for up to {t}s; /healthz and new WebSocket upgrades get 503",
            n=self.registry.calls_in_flight,
            t=self.drain_time,
        )
        d = self._within(self.registry.no_calls(), self.drain_time)
        d.addCallback(self._say_goodbye)
        d.addCallback(lambda _: self._within(self.connections.no_websockets(), self.CLOSE_GRACE))
        d.addCallback(self._close_zmq)
        return d

    def _within(self, d: Deferred, seconds: float) -> Deferred:
        """``d``, given up after ``seconds`` (then the stop goes on all the same)."""
        return d.addTimeout(seconds, self.clock).addErrback(_gave_up)

    def _say_goodbye(self, _: object = None) -> None:
        left = self.registry.calls_in_flight
        if left:
            log.warn("drain time over: {n} call(s) still in flight are cancelled", n=left)
        for session in list(self.registry.sessions):
            session.shutdown()

    def _close_zmq(self, _: object = None) -> None:
        self.forwarder.close()
        self.hub.close()
        self.zmq_factory.shutdown()
        self.names.close()


class Status:
    """What the operator's pages show of the bridge: ``/healthz`` (:class:`zmqwamp.transport.site.BridgeStatus`:
    stopping or not, and the sessions, calls in flight, subscriptions and open zmq connections), ``/metrics``'
    gauges read at scrape time, and the samples of ``/status`` (:mod:`zmqwamp.service.sampler`).  Each read is
    of counts the parts keep anyway; :meth:`subscriptions_by_endpoint` alone walks the subscriptions."""

    def __init__(
        self,
        registry: SessionRegistry,
        forwarder: Forwarder,
        hub: SubscriptionHub,
        *,
        connections: ConnectionCounter | None = None,
        resolver: EndpointResolver | None = None,
    ) -> None:
        self._registry = registry
        self._forwarder = forwarder
        self._hub = hub
        self._connections = connections
        self._resolver = resolver

    @property
    def stopping(self) -> bool:
        return self._registry.stopping

    def details(self) -> dict[str, Any]:
        return {
            "sessions": len(self._registry.sessions),
            "calls_in_flight": self._registry.calls_in_flight,
            "subscriptions": self._hub.subscription_count(),
            "zmq_endpoints": {"req": self._forwarder.addresses, "sub": self._hub.addresses},
        }

    def sessions(self) -> int:
        return len(self._registry.sessions)

    def calls_in_flight(self) -> int:
        return self._registry.calls_in_flight

    def subscriptions(self) -> int:
        return self._hub.subscription_count()

    def connections(self) -> tuple[int, int]:
        """(connections open on the listen ports, of which WebSocket): what max_sessions counts."""
        counter = self._connections
        return (counter.total, counter.websockets) if counter is not None else (0, 0)

    def req_addresses(self) -> list[str]:
        """Addresses with a REQ connection open (sorted)."""
        return self._forwarder.addresses

    def sub_addresses(self) -> list[str]:
        """Addresses with a SUB connection open (sorted)."""
        return self._hub.addresses

    def aliases(self) -> Mapping[str, Endpoint]:
        """The configured aliases (a reload replaces them)."""
        return self._resolver.aliases if self._resolver is not None else {}

    def subscriptions_by_endpoint(self) -> dict[str, tuple[str, int, int]]:
        """Endpoint name -> (its address, subscriptions, subscribers): one pass over every subscription."""
        out: dict[str, tuple[str, int, int]] = {}
        for sub in self._hub.subscriptions():
            endpoint = sub.endpoint
            _, count, members = out.get(endpoint.name, (endpoint.address, 0, 0))
            out[endpoint.name] = (endpoint.address, count + 1, members + len(sub.subscribers) + len(sub.replays))
        return out

    def history_held(self) -> Iterable[tuple[str, int, int]]:
        """(alias, messages held, bytes held) of every history alias."""
        return self._hub.history_held()

    def last_publication(self, address: str) -> int:
        """The publication id of the last message from ``address`` (a count of its messages; 0: none, or closed)."""
        return self._hub.last_publication(address)


class ReactorLagMonitor(Service):
    """See a freeze when it happens: a timer every ``interval`` seconds measures how late it runs.

    Everything the bridge does runs on one thread, the reactor's: while one piece
    of work runs (a huge message to decode, a hook that blocks, a long replay),
    nothing else is served, not even ``/healthz``.  The lateness of this timer is
    that wait, whatever caused it: observed in ``zmqwamp_reactor_lag_seconds`` (a
    histogram), and the worst of the last ``window`` to 2 x ``window`` seconds in
    ``zmqwamp_reactor_lag_max_seconds`` (a scrape every minute still sees a stall
    after it ended).  A lag of ``warning`` seconds or more is logged; at most one
    such line per ``window``, the next one says how many more there were and the
    worst.  The cost: one timer call per ``interval`` (10 per second).  The clock
    is the reactor's (wall time): a step of the system clock shows as a lag once.
    """

    def __init__(
        self,
        clock: IReactorTime,
        metrics: BridgeMetrics,
        warning: float = 1.0,
        interval: float = 0.1,
        window: float = 30.0,
    ) -> None:
        self.clock = clock
        self.metrics = metrics
        self.warning = warning
        self.interval = interval
        self.window = window
        self._call: Any = None
        self._expected = 0.0
        self._window_end = 0.0
        self._worst = 0.0  # of the current window
        self._previous_worst = 0.0  # of the window before
        self._next_line = 0.0  # no warning line before this time
        self._unlogged = 0  # stalls over the warning not logged since the last line
        self._unlogged_worst = 0.0

    def startService(self) -> None:
        super().startService()
        now = self.clock.seconds()
        self._window_end = now + self.window
        self._schedule(now)

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self, now: float) -> None:
        self._expected = now + self.interval
        self._call = self.clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        now = self.clock.seconds()
        lag = max(0.0, now - self._expected)  # a clock stepped back: no lag
        self.metrics.reactor_lag.observe(lag)
        if now >= self._window_end:
            self._previous_worst, self._worst = self._worst, 0.0
            self._window_end = now + self.window
        self._worst = max(self._worst, lag)
        self.metrics.reactor_lag_max.set(max(self._worst, self._previous_worst))
        if self._unlogged and now >= self._next_line:
            self._summarise(now)
        if lag >= self.warning:
            self._stalled(lag, now)
        self._schedule(now)

    def _stalled(self, lag: float, now: float) -> None:
        if now < self._next_line:
            self._unlogged += 1
            self._unlogged_worst = max(self._unlogged_worst, lag)
            return
        self._next_line = now + self.window
        log.warn(
            "the reactor was blocked for {lag:.2f}s: nothing else was served meanwhile "
            "(reactor_lag_warning: {warning}s)",
            lag=lag,
            warning=self.warning,
        )

    def _summarise(self, now: float) -> None:
        log.warn(
            "the reactor was blocked {n} more times over reactor_lag_warning ({warning}s) in the last {seconds:.0f}s, "
            "the worst for {worst:.2f}s",
            n=self._unlogged,
            warning=self.warning,
            seconds=self.window,
            worst=self._unlogged_worst,
        )
        self._unlogged, self._unlogged_worst = 0, 0.0
        self._next_line = now + self.window


def _gave_up(failure: Failure) -> None:
    failure.trap(TimeoutError)


class BridgeService(MultiService):
    """The top service: the log format, SIGHUP -> ``on_reload``, SIGTERM/SIGINT once, and the stop order."""

    def __init__(self, log_format: str, reactor: Any, on_reload: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.log_format = log_format
        self.on_reload = on_reload
        self.reactor = reactor

    def setServiceParent(self, parent: Any) -> None:
        super().setServiceParent(parent)
        use_log_format(parent, self.log_format)

    def privilegedStartService(self) -> None:
        install_stop_signals(self.reactor)  # before anything slow: a Ctrl-C now stops cleanly too
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            exit_cannot_listen(e)

    def startService(self) -> None:
        super().startService()
        # after the reactor's own handlers (serve_forever starts us before run)
        self.reactor.callWhenRunning(install_stop_signals, self.reactor)
        if self.on_reload is not None:
            on_reload = self.on_reload
            signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(on_reload))

    def stopService(self) -> Deferred:
        Service.stopService(self)
        children = list(self)
        first = [s for s in children if isinstance(s, DrainService)]
        rest = [s for s in reversed(children) if s not in first]
        drained = DeferredList([maybeDeferred(s.stopService) for s in first])
        return drained.addCallback(lambda _: DeferredList([maybeDeferred(s.stopService) for s in rest]))


def exit_cannot_listen(error: CannotListenError) -> None:
    """A port that cannot be bound: one clear log line and exit 1, instead of twistd's traceback."""
    reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
    log.critical(
        "cannot listen on {interface}:{port}: {reason}; is another bridge (or anything else) using it?",
        interface=error.interface or "*",
        port=error.port,
        reason=reason,
    )
    raise SystemExit(1)


_stop_handlers: dict[int, Callable[[int, object], None]] = {}  # id() of a reactor -> its handler


def install_stop_signals(reactor: Any) -> None:
    """SIGTERM/SIGINT stop the reactor once, and the process exits 0 after its drain; a repeated signal is ignored.

    Twisted's own handlers call ``reactor.stop()`` on every signal, and the
    second one raises ReactorNotRunning (a critical traceback in the log): it
    happens whenever two arrive, e.g. Ctrl-C reaching a whole process group and
    a supervisor's SIGTERM after it, or systemd's SIGTERM to every process of
    the unit while the supervisor forwards its own.  Twisted's handlers also
    make twistd end by re-raising the signal (exit -15) where a drained stop is
    a clean one.  Installed at start (before the reactor runs, a Ctrl-C would
    otherwise be a KeyboardInterrupt traceback in the middle of the start; the
    stop then waits for the reactor) and again once it runs, replacing Twisted's.
    """
    handler = _stop_handlers.get(id(reactor))
    if handler is None:
        received: list[int] = []

        def stop() -> None:
            try:
                reactor.stop()
            except ReactorNotRunning:
                pass

        def handler(number: int, frame: object) -> None:
            name = signal.Signals(number).name
            if received:
                reactor.callFromThread(log.info, "{signal} received while stopping: already stopping", signal=name)
                return
            received.append(number)
            reactor.callFromThread(log.info, "{signal} received: stopping", signal=name)
            reactor.callFromThread(stop)

        _stop_handlers[id(reactor)] = handler
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, handler)
