"""``twistd zmqwamp``: command-line options and the service they describe."""

from __future__ import annotations

from twisted.python import reflect, usage

from zmqwamp.bridge import Bridge
from zmqwamp.config import BridgeConfig, ConfigError, load_config, validate


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Serve WAMP v2 over WebSocket at /ws and bridge CALLs to ZeroMQ REP services "
        "and SUBSCRIBEs to ZeroMQ PUB services. Nothing is reachable unless allowed."
    )
    optFlags = [
        ["anonymous", None, "Allow sessions without credentials (WAMP authmethod 'anonymous')."],
    ]
    optParameters = [
        ["config", "c", None, "TOML configuration file; command-line options override it."],
        ["realm", None, None, "WAMP realm served [default: zmqwamp]."],
        ["call-timeout", None, None, "Default call timeout in seconds [default: 10]."],
        ["bridge-class", None, None, "Python path of a zmqwamp.Bridge subclass to run [default: zmqwamp.Bridge]."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["allow"] = []

    def opt_listen(self, description: str) -> None:
        """Twisted server endpoint to listen on, repeatable [default: tcp:8080:interface=127.0.0.1]."""
        self["listen"].append(description)

    def opt_allow(self, pattern: str) -> None:
        """Shell-style glob of endpoint URIs that may be reached, repeatable (e.g. 'tcp://127.0.0.1:*')."""
        self["allow"].append(pattern)

    def postOptions(self) -> None:
        try:
            config = load_config(self["config"]) if self["config"] else BridgeConfig()
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        config.listen = self["listen"] or config.listen
        config.allow = config.allow + self["allow"]
        if self["realm"] is not None:
            config.realm = self["realm"]
        if self["anonymous"]:
            config.anonymous = True
        if self["call-timeout"] is not None:
            try:
                config.call_timeout = float(self["call-timeout"])
            except ValueError:
                raise usage.UsageError("--call-timeout must be a number of seconds") from None
        try:
            validate(config, "command line")
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        self.config = config
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
    return options.bridge_class(options.config).make_service()
