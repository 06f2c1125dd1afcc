"""The public entry point: :class:`Bridge` wires the parts and holds the two hooks.

Subclass it and override :meth:`Bridge.websocket_allowed` (who may connect) and
:meth:`Bridge.zmq_allowed` (who may reach which endpoint); that is all the
server-side code a team writes.
"""

from __future__ import annotations

from typing import Any, Iterable

import zmq
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from txzmq import ZmqFactory

from zmqwamp.auth import IZmqAvatar, LoginThrottle, RuleBook, build_portal
from zmqwamp.clientlog import ClientLog
from zmqwamp.config import BridgeConfig, ConfigError, validate
from zmqwamp.endpoints import Endpoint, EndpointResolver
from zmqwamp.flow import PendingWrites
from zmqwamp.forwarder import RequestForwarder
from zmqwamp.hub import SubscriptionHub
from zmqwamp.limits import ConnectionCounter, ConnectionGuardFactory, UpstreamBudget
from zmqwamp.logs import use_log_format
from zmqwamp.metrics import BridgeMetrics
from zmqwamp.names import HostResolver
from zmqwamp.peers import ClientAddresses
from zmqwamp.policy import EndpointPolicy, OriginPolicy
from zmqwamp.protocol import WampServerFactory
from zmqwamp.router import Router
from zmqwamp.web import HostCheck, build_site

log = Logger()


class RouterService(Service):
    """Owns the ZeroMQ side and the shutdown order.

    On stop: refuse new sessions and calls, let calls in flight finish for up to
    ``drain_time`` seconds, then say GOODBYE (``wamp.close.system_shutdown``) to
    every session, wait up to ``CLOSE_GRACE`` seconds for the WebSocket
    connections to close (so the GOODBYE and close frames reach the clients
    before the reactor drops what is left), and close the ZeroMQ sockets.
    """

    CLOSE_GRACE = 3.0
    connections = None  # the listen ports' ConnectionCounter, to wait for its WebSockets
    names = None  # the HostResolver, whose threads may end at the close

    def __init__(self, router: Router, zmq_factory: ZmqFactory, clock, drain_time: float) -> None:
        self.router = router
        self.zmq_factory = zmq_factory
        self.clock = clock
        self.drain_time = drain_time

    def stopService(self):
        super().stopService()
        self.router.stopping = True
        log.info(
            "stopping: draining {n} call(s) in flight for up to {t}s; /healthz and new WebSocket upgrades get 503",
            n=self.router.calls_in_flight(), t=self.drain_time,
        )
        d = self._wait(self.router.calls_in_flight, self.drain_time)
        d.addCallback(self._say_goodbye)
        d.addCallback(lambda _: self._wait(self._connections_open, self.CLOSE_GRACE))
        d.addCallback(self._close_zmq)
        return d

    def _wait(self, busy, seconds: float) -> Deferred:
        """Fire once ``busy()`` is false, or after ``seconds``; checked every 50 ms."""
        deadline = self.clock.seconds() + seconds
        done = Deferred()

        def check() -> None:
            if busy() and self.clock.seconds() < deadline:
                self.clock.callLater(0.05, check)
            else:
                done.callback(None)

        check()
        return done

    def _connections_open(self) -> bool:
        return self.connections is not None and self.connections.websockets > 0

    def _say_goodbye(self, _=None) -> None:
        left = self.router.calls_in_flight()
        if left:
            log.warn("drain time over: {n} call(s) still in flight are cancelled", n=left)
        for session in list(self.router.sessions):
            session.shutdown()

    def _close_zmq(self, _=None) -> None:
        self.router.forwarder.close()
        self.router.hub.close()
        self.zmq_factory.shutdown()
        if self.names is not None:
            self.names.close()
        # A drained stop is a clean exit: exit 0 instead of twistd re-raising SIGTERM.
        if hasattr(self.clock, "_exitSignal"):
            self.clock._exitSignal = None


class BridgeService(MultiService):
    """The top service: the log format, SIGHUP -> ``on_reload``, SIGTERM/SIGINT once, and the stop order.

    Stop order: twistd stops every child of a MultiService at once, which would
    close the listening ports at the first instant of a drain, so a proxy would
    only see the node vanish.  Here the :class:`RouterService` drains first
    while the ports keep listening (``/healthz`` answers 503, a new WebSocket
    upgrade gets HTTP 503: :mod:`zmqwamp.web`), and the listeners close after it.
    """

    def __init__(self, log_format: str, on_reload=None, reactor=None) -> None:
        super().__init__()
        self.log_format = log_format
        self.on_reload = on_reload
        self.reactor = reactor

    def setServiceParent(self, parent):
        super().setServiceParent(parent)
        use_log_format(parent, self.log_format)

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            exit_cannot_listen(e)

    def startService(self) -> None:
        super().startService()
        if self.reactor is not None:  # after the reactor's own handlers (serve_forever starts us before run)
            self.reactor.callWhenRunning(install_stop_signals, self.reactor)
        if self.on_reload is not None:
            import signal

            signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.on_reload))

    def stopService(self):
        Service.stopService(self)
        children = list(self)
        first = [s for s in children if isinstance(s, RouterService)]
        rest = [s for s in reversed(children) if s not in first]
        drained = DeferredList([maybeDeferred(s.stopService) for s in first])
        return drained.addCallback(lambda _: DeferredList([maybeDeferred(s.stopService) for s in rest]))


def exit_cannot_listen(error: CannotListenError) -> None:
    """A port that cannot be bound: one clear log line and exit 1, instead of twistd's traceback."""
    reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
    log.critical(
        "cannot listen on {interface}:{port}: {reason}; is another bridge (or anything else) using it?",
        interface=error.interface or "*", port=error.port, reason=reason,
    )
    raise SystemExit(1)


def install_stop_signals(reactor) -> None:
    """SIGTERM/SIGINT stop the reactor once; a repeated signal is logged and ignored.

    Twisted's own handlers call ``reactor.stop()`` on every signal, and the
    second one raises ReactorNotRunning (a critical traceback in the log): it
    happens whenever two arrive, e.g. Ctrl-C reaching a whole process group and
    a supervisor's SIGTERM after it, or systemd's SIGTERM to every process of
    the unit while the supervisor forwards its own.  Installed once the reactor
    runs, so it replaces Twisted's handlers.
    """
    if reactor is None or getattr(reactor, "_zmqwamp_stop_signals", False):
        return
    import signal

    from twisted.internet.error import ReactorNotRunning

    reactor._zmqwamp_stop_signals = True
    received: list[int] = []

    def stop() -> None:
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass

    def handler(number, frame) -> None:
        name = signal.Signals(number).name
        if received:
            reactor.callFromThread(log.info, "{signal} received while stopping: already stopping", signal=name)
            return
        received.append(number)
        reactor._exitSignal = number  # what Twisted's handler records; cleared after a drained stop
        reactor.callFromThread(log.info, "{signal} received: stopping", signal=name)
        reactor.callFromThread(stop)

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, handler)


class Bridge:
    """A zmqwamp bridge.  Keyword arguments are the fields of :class:`BridgeConfig`.

    ``checkers`` are Twisted Cred checkers (``ICredentialsChecker``) for the
    ``ticket`` and ``wampcra`` logins, tried in order (see docs/auth.md).
    """

    def __init__(
        self,
        config: BridgeConfig | None = None,
        *,
        checkers: Iterable[ICredentialsChecker] = (),
        **options: Any,
    ) -> None:
        config = config or BridgeConfig()
        for key, value in options.items():
            if not hasattr(config, key):
                raise TypeError(f"unknown bridge option {key!r}")
            if key in ("listen", "allow", "origins", "allow_hosts", "trusted_proxies") and isinstance(value, str):
                value = [value]
            setattr(config, key, value)
        validate(config)
        self.config = config
        self.checkers = list(checkers)
        self.policy = EndpointPolicy(config.allow)
        self.origins = OriginPolicy(config.origins)
        self.rulebook = RuleBook(config.rules)  # the per-user rules every avatar reads; replaced on reload
        self.inherited_fds: list[tuple[int, bool]] = []  # (fd, PROXY protocol?) of a --workers worker
        self.config_loader = None  # () -> BridgeConfig, for reload; set by twistd when there is a --config

    # -- the hooks ----------------------------------------------------------

    def websocket_allowed(self, request) -> bool:
        """May this HTTP request become a WebSocket?  ``request`` is autobahn's ConnectionRequest.

        Anything but True refuses the upgrade with HTTP 403.  The default is the
        Origin allowlist (``origins`` / ``--origin``): requests without an Origin
        (non-browser clients) and same-origin requests are allowed too.
        """
        return self.origins.allows(request.origin, request.headers.get("host"))

    def zmq_allowed(self, session, action: str, endpoint: Endpoint, options: dict) -> Any:
        """May ``session`` do ``action`` ('call'/'subscribe') on ``endpoint``?  bool or Deferred[bool].

        The default applies the global allow rules, then the session's avatar.
        """
        if not self.policy.allows(endpoint):
            return False
        avatar = IZmqAvatar(session.avatar)
        return avatar.zmq_allowed(action, endpoint, options)

    def reload(self) -> None:
        """Re-read the configuration (SIGHUP): allow rules, origins, aliases and per-user rules.

        Open sessions stay and follow the new rules: every open subscription is
        checked again with :meth:`zmq_allowed`, and those now denied are revoked.
        Listen addresses, realm and limits need a restart.  A bad file is logged
        and the old rules are kept.
        """
        if self.config_loader is None:
            log.info("SIGHUP: there is no configuration file to reload")
            return
        try:
            new = self.config_loader()
        except ConfigError as e:
            log.error("reload failed, keeping the running configuration: {error}", error=str(e))
            return
        if new.auth != self.config.auth:
            log.warn("reload: 'auth' changed in the file; checkers change only at a restart (the running ones stay)")
        self.policy = EndpointPolicy(new.allow)
        self.origins = OriginPolicy(new.origins)
        self.router.resolver.aliases = dict(new.endpoints)
        self.rulebook.replace(new.rules)
        self.config.allow, self.config.origins, self.config.endpoints, self.config.rules = (
            new.allow, new.origins, new.endpoints, new.rules,
        )
        log.info(
            "configuration reloaded: {allow} allow pattern(s), {aliases} alias(es), {rules} rule(s)",
            allow=len(new.allow), aliases=len(new.endpoints), rules=len(new.rules),
        )
        d = self.router.recheck_subscriptions()
        d.addCallback(lambda revoked: log.info("reload: {n} subscription(s) revoked", n=revoked))
        d.addErrback(lambda failure: log.failure("reload: re-checking subscriptions failed", failure))

    # -- wiring -------------------------------------------------------------

    def make_service(self, reactor=None) -> MultiService:
        if reactor is None:
            from twisted.internet import reactor
        config = self.config
        metrics = BridgeMetrics()
        zmq_factory = ZmqFactory()
        zmq_factory.reactor = reactor
        # A closed socket keeps its slot until libzmq's reaper is done with it (up to its linger
        # period): leave room for as many again as max_zmq_sockets allows open (default: 1023).
        context = zmq_factory.context
        context.set(zmq.MAX_SOCKETS, max(context.get(zmq.MAX_SOCKETS), 2 * config.max_zmq_sockets))
        budget = UpstreamBudget(config.max_endpoints_per_session, config.max_endpoints_per_peer, config.max_zmq_sockets)
        names = HostResolver(reactor, metrics=metrics)
        writes = PendingWrites()  # the zmq readers hold it, the WebSocket connections fill it
        router = Router(
            realm=config.realm,
            portal=build_portal(self.checkers, config.anonymous, self.rulebook),
            resolver=EndpointResolver(config.endpoints),
            authorize=self.zmq_allowed,
            forwarder=RequestForwarder(
                zmq_factory, reactor, metrics, idle_close=config.idle_close, writes=writes, budget=budget, names=names
            ),
            hub=SubscriptionHub(
                zmq_factory, metrics, writes=writes, budget=budget, names=names, max_filters=config.max_filters_per_endpoint
            ),
            metrics=metrics,
            call_timeout=config.call_timeout,
            max_call_timeout=config.max_call_timeout,
            throttle=LoginThrottle(
                reactor, floor=config.login_delay, cap=config.login_penalty_max,
                login_timeout=config.handshake_timeout, max_queue=config.max_pending_logins,
            ),
            client_log=ClientLog(metrics, config.max_log_lines_per_second, config.max_log_lines_per_second_total),
            clock=reactor,
            max_filter_length=config.max_filter_length,
        )
        top = BridgeService(config.log_format, self.reload, reactor)
        router_service = RouterService(router, zmq_factory, reactor, config.drain_time)
        router_service.names = names
        router_service.setServiceParent(top)
        factory = WampServerFactory(router, self.websocket_allowed, config, reactor, writes=writes)
        addresses = ClientAddresses(config.trusted_proxies, config.forwarded_header)
        hosts = HostCheck(config.allow_hosts)

        def guarded(site, counter: ConnectionCounter) -> ConnectionGuardFactory:
            return ConnectionGuardFactory(
                site, config.handshake_timeout, reactor, counter, addresses,
                on_limit=lambda limit: metrics.limit_exceeded.labels(limit).inc(),
            )

        # every connection to the listen ports is counted (max_sessions, max_sessions_per_peer) ...
        connections = ConnectionCounter(config.max_sessions, config.max_sessions_per_peer)
        router_service.connections = connections
        site = guarded(build_site(factory, router, static=config.static, metrics=not config.metrics_listen, hosts=hosts), connections)
        self.router = router
        for listener in self._listeners(reactor, site):
            listener.setServiceParent(top)
        # ... and those to the metrics ports apart, so a flood of the first never hides the second
        operations = guarded(
            build_site(None, router, static=False, hosts=hosts), ConnectionCounter(config.max_sessions, config.max_sessions_per_peer)
        )
        for description in config.metrics_listen:
            self._listener(reactor, description, operations).setServiceParent(top)
        return top

    def _listeners(self, reactor, site) -> list[Service]:
        if self.inherited_fds:  # a worker of --workers: the supervisor holds the ports
            from zmqwamp.workers import InheritedPortService

            return [InheritedPortService(reactor, fd, site, proxy) for fd, proxy in self.inherited_fds]
        return [self._listener(reactor, description, site) for description in self.config.listen_endpoints]

    @staticmethod
    def _listener(reactor, description: str, site) -> Service:
        listener = StreamServerEndpointService(serverFromString(reactor, description), site)
        listener._raiseSynchronously = True  # a port we cannot bind stops startup with the reason
        return listener

    def serve_forever(self) -> None:
        """Run the bridge in this process until SIGINT/SIGTERM."""
        import sys

        from twisted.internet import reactor
        from twisted.logger import globalLogBeginner, textFileLogObserver

        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
        service = self.make_service(reactor)
        service.startService()
        reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
        reactor.run()
