"""The public entry point: :class:`Bridge` wires the parts and holds the two hooks.

Subclass it and override :meth:`Bridge.websocket_allowed` (who may connect) and
:meth:`Bridge.zmq_allowed` (who may reach which endpoint); that is all the
server-side code a team writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields
from functools import partial
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import Portal
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from zmqwamp.auth.cred import (
    IdentityChange,
    IIdentitySource,
    IZmqAvatar,
    RuleBook,
    build_portal,
    provider_name,
    set_anonymous,
)
from zmqwamp.auth.login import LoginService
from zmqwamp.auth.policy import EndpointPolicy, OriginPolicy, delimiter_warnings
from zmqwamp.auth.throttle import LoginThrottle
from zmqwamp.clientlog import ClientLog
from zmqwamp.metrics import BridgeMetrics
from zmqwamp.peers import ClientAddresses
from zmqwamp.service.config import BridgeConfig, ConfigError, limits, validate
from zmqwamp.service.lifecycle import BridgeService, DrainService, ListeningPort, ReactorLagMonitor, Status
from zmqwamp.service.sampler import StatusSampler
from zmqwamp.transport.guard import ConnectionCounter, ConnectionGuardFactory
from zmqwamp.transport.site import HostCheck, build_site
from zmqwamp.transport.websocket import WampServerFactory, WebSocketOptions
from zmqwamp.transport.writer import WriteBatch
from zmqwamp.upstream.budget import UpstreamBudget
from zmqwamp.upstream.endpoints import Endpoint, EndpointResolver
from zmqwamp.upstream.forwarder import RequestForwarder
from zmqwamp.upstream.hub import SubscriptionHub
from zmqwamp.upstream.reader import BridgeZmqFactory
from zmqwamp.upstream.resolver import HostResolver
from zmqwamp.upstream.sockets import UpstreamSockets
from zmqwamp.wamp.limits import SessionLimits
from zmqwamp.wamp.registry import SessionRegistry
from zmqwamp.wamp.router import Router
from zmqwamp.wamp.session import SessionContext

log = Logger()

# Seconds between two looks at the users files (a stat each) for users removed or changed
IDENTITY_POLL = 1.0
# What a reload applies; a change to anything else is logged as needing a restart
RELOADED = {"allow", "origins", "endpoints", "rules", "max_history_bytes", "anonymous", "auth"}


def websocket_options(config: BridgeConfig) -> WebSocketOptions:
    """What the WebSocket side takes of ``config``: the options of the same names (and the session limits)."""
    limits = SessionLimits(**{f.name: getattr(config, f.name) for f in fields(SessionLimits)})
    taken = {f.name: getattr(config, f.name) for f in fields(WebSocketOptions) if f.name != "session_limits"}
    return WebSocketOptions(**taken, session_limits=limits)


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
        # for reload: set by twistd when there is a --config
        self.config_loader: Callable[[], BridgeConfig] | None = None
        # made by make_service: what every session shares (router, logins, registry), and the login portal
        self.context: SessionContext | None = None
        self.portal: Portal | None = None

    # -- the hooks ----------------------------------------------------------

    def websocket_allowed(self, request) -> bool:
        """May this HTTP request become a WebSocket?  ``request`` is autobahn's ConnectionRequest.

        Anything but True refuses the upgrade with HTTP 403.  The default is the
        Origin allowlist (``origins`` / ``--origin``): requests without an Origin
        (non-browser clients) and same-origin requests (same scheme, host and port;
        ``request.secure``: the client used TLS) are allowed too.
        """
        return self.origins.allows(request.origin, request.headers.get("host"), getattr(request, "secure", False))

    def zmq_allowed(self, session, action: str, endpoint: Endpoint, options: dict) -> Any:
        """May ``session`` do ``action`` ('call'/'subscribe') on ``endpoint``?  bool or Deferred[bool].

        The default applies the global allow rules, then the session's avatar.
        """
        if not self.policy.allows(endpoint):
            return False
        avatar = IZmqAvatar(session.avatar)
        return avatar.zmq_allowed(action, endpoint, options)

    def _made(self) -> tuple[SessionContext, Portal]:
        """What :meth:`make_service` made; reloads and identity changes come only after it."""
        if self.context is None or self.portal is None:
            raise RuntimeError("the bridge has no services yet: call make_service() first")
        return self.context, self.portal

    def reload(self) -> None:
        """Re-read the configuration (SIGHUP): allow rules, origins, aliases, per-user rules and ``anonymous``.

        Open sessions stay and follow the new rules: every open subscription is
        checked again with :meth:`zmq_allowed`, and those now denied are revoked;
        anonymous sessions end if ``anonymous`` was turned off.  Listen addresses,
        realm and limits need a restart (a changed one is named in a warning).  A
        bad file is logged and the old rules are kept.  The users files are read
        again too (their removed or changed users lose their sessions).

        Aliases' histories (docs/history.md): an alias whose settings are unchanged keeps
        its history; one that gains history starts recording now (if its connection is
        open, else when it opens), one that loses it drops what it held; an alias whose
        history, history_bytes or keep_open changed is a new endpoint, so its
        subscriptions are revoked like those of an alias whose address changed, and its
        history starts empty.  keep_open connections are opened, or closed if no longer
        kept open and nobody is subscribed.
        """
        self.refresh_identities()  # the users files, whatever the config says
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
        ignored = [
            f.name
            for f in fields(BridgeConfig)
            if f.name not in RELOADED and getattr(new, f.name) != getattr(self.config, f.name)
        ]
        if ignored:
            log.warn("reload: {names} changed; they take effect only at a restart", names=", ".join(ignored))
        context, _ = self._made()
        self._reload_anonymous(new.anonymous)
        self.policy = EndpointPolicy(new.allow)
        self.origins = OriginPolicy(new.origins)
        self.rulebook.replace(new.rules)
        self.config.allow, self.config.origins, self.config.endpoints, self.config.rules = (
            new.allow,
            new.origins,
            new.endpoints,
            new.rules,
        )
        self.config.max_history_bytes = new.max_history_bytes
        log.info(
            "configuration reloaded: {allow} allow pattern(s), {aliases} alias(es), {rules} rule(s), "
            "anonymous {anonymous}",
            allow=len(new.allow),
            aliases=len(new.endpoints),
            rules=len(new.rules),
            anonymous="on" if new.anonymous else "off",
        )
        self._warn_delimiters()
        # the new aliases and a new policy generation: open subscriptions are asked again under the rules above
        d = context.router.reload(new.endpoints)
        d.addCallback(lambda revoked: log.info("reload: {n} subscription(s) revoked", n=revoked))
        d.addErrback(lambda failure: log.failure("reload: re-checking subscriptions failed", failure))

    def _reload_anonymous(self, anonymous: bool) -> None:
        """A reload turned anonymous access on or off: the portal serves it or not, and its open sessions end."""
        if anonymous == self.config.anonymous:
            return
        context, portal = self._made()
        self.config.anonymous = anonymous
        set_anonymous(portal, anonymous)
        if anonymous:
            log.info("reload: anonymous access turned on")
            return
        registry = context.registry
        sessions = [s for s in registry.sessions_of("anonymous", "anonymous") if s.avatar.authmethod == "anonymous"]
        for session in sessions:
            registry.revoke(session, "anonymous access was turned off")
        log.info("reload: anonymous access turned off, {n} anonymous session(s) ended", n=len(sessions))

    def refresh_identities(self) -> None:
        """Ask the checkers whose identities can change (a users file) to look for changes now."""
        for checker in self.checkers:
            if IIdentitySource.providedBy(checker):
                try:
                    checker.refresh()
                except Exception:
                    log.failure("{checker}: looking for changed identities failed", checker=provider_name(checker))

    def identities_changed(self, checker: ICredentialsChecker, changes: list[IdentityChange]) -> None:
        """``checker`` no longer vouches for these identities as before: the sessions it opened for them end."""
        provider = provider_name(checker)
        registry = self._made()[0].registry
        ended = 0
        for change in changes:
            for session in registry.sessions_of(provider, change.authid):
                registry.revoke(session, change.why, change.detail)
                ended += 1
        log.info(
            "{provider}: {n} user(s) removed or changed, {ended} session(s) ended",
            provider=provider,
            n=len(changes),
            ended=ended,
        )
        self._warn_delimiters()

    def _warn_delimiters(self) -> None:
        """Warn about the users that a rule's ``{authid}<delimiter>`` filter will never serve."""
        identities = [
            pair for checker in self.checkers if IIdentitySource.providedBy(checker) for pair in checker.identities()
        ]
        for warning in delimiter_warnings(self.config.rules, identities):
            log.warn("{warning}", warning=warning)

    # -- wiring -------------------------------------------------------------

    def make_service(self, reactor=None) -> MultiService:
        """The bridge's services, on ``reactor`` (default: the global one): what twistd runs."""
        if reactor is None:
            from twisted.internet import reactor
        config = self.config
        metrics = BridgeMetrics()
        client_log = ClientLog(metrics, config.max_log_lines_per_second, config.max_log_lines_per_second_total)
        # One write batch for the bridge: the zmq readers hold it, the WebSocket connections fill it.  A
        # closed socket keeps its slot until libzmq's reaper is done with it (up to its linger period):
        # room for as many again as max_zmq_sockets allows open (default: 1023).
        writes = WriteBatch()
        zmq_factory = BridgeZmqFactory(reactor, writes, max_sockets=2 * config.max_zmq_sockets)
        budget = UpstreamBudget(config.max_endpoints_per_session, config.max_endpoints_per_peer, config.max_zmq_sockets)
        names = HostResolver(reactor, metrics=metrics)
        sockets = UpstreamSockets(zmq_factory, metrics, budget, names)
        registry = SessionRegistry(metrics, reactor)
        forwarder = RequestForwarder(zmq_factory, metrics, idle_close=config.idle_close, sockets=sockets)
        hub = SubscriptionHub(
            zmq_factory,
            metrics,
            sockets=sockets,
            max_filters=config.max_filters_per_endpoint,
            max_replay_per_second=config.max_replay_per_second,
            client_log=client_log,
        )
        resolver = EndpointResolver(config.endpoints)
        router = Router(
            resolver=resolver,
            authorize=self.zmq_allowed,
            forwarder=forwarder,
            hub=hub,
            registry=registry,
            metrics=metrics,
            clock=reactor,
            call_timeout=config.call_timeout,
            max_call_timeout=config.max_call_timeout,
            max_filter_length=config.max_filter_length,
            max_call_arguments=config.max_call_arguments,
            client_log=client_log,
        )
        # the aliases' histories, and their keep_open connections once the reactor runs (after any fork)
        reactor.callWhenRunning(router.start)
        portal = build_portal(self.checkers, config.anonymous, self.rulebook)
        logins = LoginService(
            config.realm,
            portal,
            LoginThrottle(
                reactor,
                floor=config.login_delay,
                cap=config.login_penalty_max,
                login_timeout=config.handshake_timeout,
                max_queue=config.max_pending_logins,
            ),
            metrics,
            stopping=lambda: registry.stopping,
            client_log=client_log,
        )
        context = SessionContext(router, logins, registry, metrics, client_log, reactor)
        self.context, self.portal = context, portal
        # every connection to the listen ports is counted (max_sessions, max_sessions_per_peer) ...
        connections = ConnectionCounter(config.max_sessions, config.max_sessions_per_peer)
        # what /healthz, the gauges of /metrics read when scraped, and /status show
        status = Status(registry, forwarder, hub, connections=connections, resolver=resolver)
        metrics.watch_state(
            connections=status.connections,
            calls_in_flight=status.calls_in_flight,
            subscriptions=status.subscriptions,
            draining=lambda: status.stopping,
        )
        metrics.watch_limits(lambda: limits(self.config))
        sampler = StatusSampler(status, metrics, reactor, limits=lambda: limits(self.config))
        top = BridgeService(config.log_format, reactor, self.reload)
        # users files: what an edit takes away from open sessions, seen within a second
        sources = [checker for checker in self.checkers if IIdentitySource.providedBy(checker)]
        for checker in sources:
            checker.watch(partial(self.identities_changed, checker))
        if sources:
            watcher = TimerService(IDENTITY_POLL, self.refresh_identities)
            watcher.clock = reactor
            watcher.setServiceParent(top)
        self._warn_delimiters()
        DrainService(
            registry,
            connections,
            forwarder=forwarder,
            hub=hub,
            zmq_factory=zmq_factory,
            names=names,
            clock=reactor,
            drain_time=config.drain_time,
        ).setServiceParent(top)
        ReactorLagMonitor(reactor, metrics, config.reactor_lag_warning).setServiceParent(top)
        sampler.setServiceParent(top)
        factory = WampServerFactory(context, self.websocket_allowed, websocket_options(config), writes)
        addresses = ClientAddresses(config.trusted_proxies, config.forwarded_header)
        hosts = HostCheck(config.allow_hosts)

        def guarded(site, counter: ConnectionCounter) -> ConnectionGuardFactory:
            return ConnectionGuardFactory(
                site,
                config.handshake_timeout,
                reactor,
                counter,
                addresses,
                on_limit=lambda limit: metrics.limit_exceeded.labels(limit).inc(),
            )

        site = guarded(
            build_site(
                factory,
                context,
                status,
                static=config.static,
                metrics=not config.metrics_listen,
                hosts=hosts,
                feed=sampler,
            ),
            connections,
        )
        for endpoint in self._listen_endpoints(reactor):
            ListeningPort(endpoint, site).setServiceParent(top)
        # ... and those to the metrics ports apart, so a flood of the first never hides the second
        operations = guarded(
            build_site(None, context, status, static=False, hosts=hosts, feed=sampler),
            ConnectionCounter(config.max_sessions, config.max_sessions_per_peer),
        )
        for description in config.metrics_listen:
            ListeningPort(serverFromString(reactor, description), operations).setServiceParent(top)
        return top

    def _listen_endpoints(self, reactor) -> list:
        if self.inherited_fds:  # a worker of --workers: the supervisor holds the ports
            from zmqwamp.service.workers import inherited_endpoint

            return [inherited_endpoint(reactor, fd, proxy) for fd, proxy in self.inherited_fds]
        return [serverFromString(reactor, description) for description in self.config.listen_endpoints]

    def serve_forever(self) -> None:
        """Run the bridge in this process until SIGINT/SIGTERM."""
        import sys

        from twisted.internet import reactor
        from twisted.logger import globalLogBeginner, textFileLogObserver

        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
        service = self.make_service(reactor)
        service.privilegedStartService()  # binds the ports, as twistd would
        service.startService()
        reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
        reactor.run()
