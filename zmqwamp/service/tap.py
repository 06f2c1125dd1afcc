"""``twistd zmqwamp``: command-line options and the service they describe."""

from __future__ import annotations

from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.cred.strcred import AuthOptionMixin
from twisted.python import reflect, usage

from zmqwamp.service.bridge import Bridge
from zmqwamp.service.config import BridgeConfig, ConfigError, load_config, validate

# Limits and slow consumers (docs/reliability.md); the config key is the option name with '_'.
LIMIT_OPTIONS = [
    ("max-message-size", "Largest WebSocket message a client may send, in bytes (close 1009 beyond)."),
    ("max-outgoing-buffer", "Bytes queued per client that is not reading, beyond the transport's 64 KiB."),
    ("slow-consumer", "Default policy when a client's outgoing buffer is full: drop_oldest, drop_newest or close."),
    ("max-calls-in-flight", "CALLs one session may have waiting for a reply."),
    ("max-subscriptions", "Subscriptions one session may hold."),
    ("max-filter-length", "Longest subscription filter, in bytes."),
    ("max-filters-per-endpoint", "Distinct filters subscribed on one upstream address, all sessions together."),
    ("max-endpoints-per-session", "zmq connections opened by one session's requests that may be open at once."),
    ("max-endpoints-per-peer", "zmq connections opened by the sessions of one peer address that may be open at once."),
    ("max-zmq-sockets", "zmq connections open in total (idle REQ connections are closed first to make room)."),
    ("max-calls-per-second", "CALLs per second per session (the same number may come in one burst)."),
    ("max-subscribes-per-second", "SUBSCRIBEs per second per session, after a burst of max-subscriptions + as many."),
    ("max-messages-per-second", "WAMP messages of any kind per second per session, after a burst of twice as many."),
    ("max-call-arguments", "Positional arguments of one CALL (each becomes a ZeroMQ frame)."),
    ("max-sessions", "Connections (HTTP or WebSocket) in total (HTTP 503 beyond)."),
    ("max-sessions-per-peer", "Connections (HTTP or WebSocket) from one client address (HTTP 503 beyond)."),
    (
        "handshake-timeout",
        "Seconds from TCP accept, or from the previous response, to a complete HTTP request; "
        "and to a completed WAMP login.",
    ),
    ("max-pending-logins", "Login attempts waiting for their check, per peer and per authid (refused at once beyond)."),
    ("ping-interval", "Seconds between WebSocket pings to an idle client."),
    ("ping-timeout", "Seconds to wait for the pong before dropping the client."),
    ("max-message-fragments", "WebSocket frames one message may be made of (close 1009 beyond)."),
    (
        "max-login-message-size",
        "Largest WebSocket message before the session is open (HELLO, AUTHENTICATE), in bytes (close 1009 beyond).",
    ),
    ("max-control-frames-per-second", "WebSocket pings and pongs per second from one client (close 1008 beyond)."),
    ("max-log-lines-per-second", "Log lines one client may cause per second, after a burst of 10."),
    ("max-log-lines-per-second-total", "Log lines all clients together may cause per second."),
    ("max-history-bytes", "Bytes the aliases' histories may hold together (the sum of their history_bytes)."),
    ("reactor-lag-warning", "Seconds the reactor may be blocked (serving nobody) before a warning is logged."),
    (
        "max-replay-per-second",
        "History replay work per client address per second, in replayed EVENTs (a held message looked at counts "
        "1/100); as much again at once.",
    ),
]


def _limit_parameters() -> list:
    defaults = BridgeConfig()
    return [
        [name, None, None, f"{text} [default: {getattr(defaults, name.replace('-', '_'))}]"]
        for name, text in LIMIT_OPTIONS
    ]


class Options(usage.Options, AuthOptionMixin):
    synopsis = "[options]"
    # --auth CHECKER (twisted.cred.strcred): WAMP ticket is IUsernamePassword, wampcra
    # IUsernameHashedPassword; anonymous access is --anonymous, not a checker.
    supportedInterfaces = (IUsernamePassword, IUsernameHashedPassword)
    longdesc = (
        "Serve WAMP v2 over WebSocket at /ws and bridge CALLs to ZeroMQ REP services "
        "and SUBSCRIBEs to ZeroMQ PUB services. Nothing is reachable unless allowed."
    )
    optFlags = [
        ["anonymous", None, "Allow sessions without credentials (WAMP authmethod 'anonymous')."],
        ["no-static", None, "Do not serve the demo page (/) and the client bundle (/js/)."],
    ]
    optParameters = [
        ["config", "c", None, "TOML configuration file; command-line options override it."],
        ["realm", None, None, "WAMP realm served [default: zmqwamp]."],
        ["call-timeout", None, None, "Default call timeout in seconds [default: 10]."],
        ["bridge-class", None, None, "Python path of a zmqwamp.Bridge subclass to run [default: zmqwamp.Bridge]."],
        ["log-format", None, None, "Log output: 'text' or 'json' (one JSON object per line) [default: text]."],
        ["drain-time", None, None, "Seconds to let calls in flight finish on SIGTERM/SIGINT [default: 10]."],
        [
            "forwarded-header",
            None,
            None,
            "Header a --trusted-proxy names the client in: 'x-forwarded-for' or 'forwarded' (RFC 7239) "
            "[default: x-forwarded-for].",
        ],
        ["workers", None, 1, "Number of bridge processes sharing the tcp: listen ports (SO_REUSEPORT).", int],
    ] + _limit_parameters()

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["allow"] = []
        self["origin"] = []
        self["allow-host"] = []
        self["trusted-proxy"] = []

    def opt_listen(self, description: str) -> None:
        """Twisted server endpoint to listen on, repeatable [default: tcp:8080:interface=127.0.0.1]."""
        self["listen"].append(description)

    def parseOptions(self, options=None):
        import sys

        self.raw_args = list(sys.argv[1:] if options is None else options)
        return super().parseOptions(options)

    def opt_inherit_fd(self, fd: str) -> None:
        """(internal) Listen on this inherited socket instead of --listen; used by --workers."""
        proxy = fd.startswith("haproxy:")  # a haproxy:tcp: listen port: PROXY protocol first
        try:
            self.setdefault("inherit-fd", []).append((int(fd[len("haproxy:") :] if proxy else fd), proxy))
        except ValueError:
            raise usage.UsageError("--inherit-fd takes a file descriptor number") from None

    def opt_metrics_listen(self, description: str) -> None:
        """Endpoint for /metrics, /status and /healthz only, repeatable; the first two then leave the --listen ports."""
        self.setdefault("metrics-listen", []).append(description)

    def opt_allow(self, pattern: str) -> None:
        """Shell-style glob of endpoint URIs that may be reached, repeatable (e.g. 'tcp://127.0.0.1:*')."""
        self["allow"].append(pattern)

    def opt_origin(self, pattern: str) -> None:
        """Browser Origin allowed to open the WebSocket, repeatable; a glob like 'https://*.example.com'.
        Same-origin pages and clients sending no Origin are always allowed."""
        self["origin"].append(pattern)

    def opt_allow_host(self, pattern: str) -> None:
        """Host name (glob, no port) accepted on a loopback address besides localhost, 127.0.0.1 and [::1],
        repeatable; '*' turns the DNS rebinding check off."""
        self["allow-host"].append(pattern)

    def opt_trusted_proxy(self, network: str) -> None:
        """Proxy address or CIDR network (or 'unix') whose forwarded client address is believed, repeatable."""
        self["trusted-proxy"].append(network)

    # Options whose value sets the BridgeConfig field of the same name ('-' -> '_'),
    # converted to the type of that field's default.
    VALUE_OPTIONS = (
        "realm",
        "call-timeout",
        "drain-time",
        "log-format",
        "forwarded-header",
        *(name for name, _ in LIMIT_OPTIONS),
    )

    def merged_config(self) -> BridgeConfig:
        """The config file with the command line on top: at start, and again on SIGHUP."""
        config = load_config(self["config"]) if self["config"] else BridgeConfig()
        config.listen = self["listen"] or config.listen
        config.allow = config.allow + self["allow"]
        config.origins = config.origins + self["origin"]
        config.allow_hosts = config.allow_hosts + self["allow-host"]
        config.trusted_proxies = config.trusted_proxies + self["trusted-proxy"]
        if self["anonymous"]:
            config.anonymous = True
        if self["no-static"]:
            config.static = False
        config.metrics_listen = self.get("metrics-listen") or config.metrics_listen
        for option in self.VALUE_OPTIONS:
            if self[option] is not None:
                key = option.replace("-", "_")
                kind = type(getattr(config, key))
                try:
                    setattr(config, key, kind(self[option]))
                except ValueError:
                    raise ConfigError(f"--{option} must be a{'n' if kind is int else ''} {kind.__name__}") from None
        validate(config, "command line")
        return config

    def _file_checkers(self, config: BridgeConfig) -> list:
        """The checkers of the file's ``auth`` list, made as ``--auth`` makes them (same plugins, same checks).

        Errors name the file and the checker type, never the rest of the description
        (``memory:alice:secret`` holds a password).
        """
        options = type(self)()
        for index, description in enumerate(config.auth):
            try:
                options.opt_auth(description)
            except usage.UsageError as e:
                kind, _, argstring = description.partition(":")
                reason = str(e).replace(argstring, "...") if argstring else str(e)
                raise usage.UsageError(f"{self['config']}: auth[{index}] ({kind}): {reason}") from None
        return options.get("credCheckers", [])

    def postOptions(self) -> None:
        try:
            config = self.merged_config()
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        from twisted.internet import reactor
        from twisted.internet.endpoints import serverFromString

        if self["workers"] < 1:
            raise usage.UsageError("--workers must be at least 1")
        if self["workers"] > 1 and config.metrics_listen:
            raise usage.UsageError(
                "--metrics-listen cannot be combined with --workers: every worker would bind it; "
                "scrape /metrics on the listen port (it reaches one worker per request) or run one bridge per port"
            )
        if self["workers"] > 1:
            from zmqwamp.service.workers import WorkersUnsupported, tcp_listens

            try:
                self.shared_listens = tcp_listens(reactor, config.listen_endpoints)
            except WorkersUnsupported as e:
                raise usage.UsageError(str(e)) from None
        for description in config.listen_endpoints + config.metrics_listen:
            try:
                serverFromString(reactor, description)
            except Exception as e:  # endpoint parsers raise whatever their arguments cause
                raise usage.UsageError(f"--listen {description!r}: {e}") from None
        self.config = config
        self["credCheckers"] = self._file_checkers(config) + self.get("credCheckers", [])
        self.bridge_class = Bridge
        if self["bridge-class"]:
            try:
                cls = reflect.namedAny(self["bridge-class"])
            except (reflect.ModuleNotFound, reflect.ObjectNotFound, ValueError, AttributeError) as e:
                raise usage.UsageError(f"--bridge-class: cannot import {self['bridge-class']!r}: {e}") from None
            if not (isinstance(cls, type) and issubclass(cls, Bridge)):
                raise usage.UsageError("--bridge-class must name a subclass of zmqwamp.Bridge")
            self.bridge_class = cls


def makeService(options: Options):
    if options["workers"] > 1:
        from twisted.internet import reactor

        from zmqwamp.service.workers import WorkerSupervisor, worker_args

        return WorkerSupervisor(
            reactor,
            worker_args(options.raw_args),
            options.shared_listens,
            options["workers"],
            stop_timeout=options.config.drain_time + 10,
            log_format=options.config.log_format,
        )
    bridge = options.bridge_class(options.config, checkers=options.get("credCheckers", []))
    bridge.inherited_fds = options.get("inherit-fd", [])
    if options["config"]:
        bridge.config_loader = options.merged_config
    return bridge.make_service()
