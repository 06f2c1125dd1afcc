"""``python -m zmqwamp.healthcheck [--timeout SECONDS] CONFIG``: exit 0 if the bridge configured in CONFIG answers
``/healthz`` 200, 1 if not, 2 on a usage error (``--help`` says so).

For a container's HEALTHCHECK (examples/deploy/Dockerfile) and similar probes: the port comes from
the configuration (its first ``metrics_listen`` endpoint, else its first ``listen`` one), so the
check follows the config instead of hard-coding 8080.  It speaks to the endpoint as a client of
that kind would: plain TCP, TLS (``ssl:``, certificate not checked: it is this host's own bridge),
a unix socket, and for ``haproxy:`` listeners a PROXY protocol v2 LOCAL header first (what the
proxy's own health checks send).  A wildcard interface is asked on loopback.  Exit 1 with one
line on stderr otherwise: not listening, a 503 while the bridge drains, a bad config.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys

from zmqwamp.service.config import ConfigError, load_config
from zmqwamp.service.descriptions import description_fields

# PROXY protocol v2: signature, version 2 + LOCAL command, family UNSPEC, no addresses.
PROXY_V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00, 0x00, 0x00])


def target(description: str) -> tuple[str, str | tuple[str, int], bool]:
    """``(kind, where to connect, behind a PROXY protocol listener?)`` of a ``listen`` description: where is a
    unix socket's path or ``(host, port)``; "tcp:8080:interface=..." and "tcp:port=8080" alike.  ValueError if
    it cannot be checked."""
    proxy = description.startswith("haproxy:")
    kind, args, kwargs = description_fields(description[len("haproxy:") :] if proxy else description)
    if kind == "unix":
        return kind, kwargs.get("address") or (args[0] if args else ""), proxy
    if kind in ("tcp", "tcp6", "ssl"):
        interface = kwargs.get("interface", "")
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(interface, interface)
        return kind, (host, int(kwargs.get("port") or (args[0] if args else ""))), proxy
    raise ValueError(f"cannot check a {kind}: endpoint")


def _connect(description: str, timeout: float) -> socket.socket:
    kind, where, proxy = target(description)
    if isinstance(where, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(where)
    else:
        sock = socket.create_connection(where, timeout=timeout)
    if proxy:
        sock.sendall(PROXY_V2_LOCAL)
    if kind == "ssl":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock)
    return sock


def check(config_path: str, timeout: float = 3.0) -> tuple[bool, str]:
    """(healthy, what was found)."""
    try:
        config = load_config(config_path)
    except ConfigError as e:
        return False, str(e)
    description = (config.metrics_listen or config.listen_endpoints)[0]
    try:
        with _connect(description, timeout) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            head = b""
            while b"\r\n" not in head:
                chunk = sock.recv(1024)
                if not chunk:
                    break
                head += chunk
    except (OSError, ValueError) as e:
        return False, f"{description}: {e}"
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    return status.startswith("HTTP/1.1 200"), f"{description}: {status or 'no answer'}"


EXIT_STATUS = "exit status: 0 healthy; 1 unhealthy (one line on stderr says why); 2 usage error"


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text}")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line: ``CONFIG`` and ``--timeout``; ``--help`` says what it does and its exit status."""
    p = argparse.ArgumentParser(
        prog="python -m zmqwamp.healthcheck",
        description="Ask the bridge configured in CONFIG for /healthz, as a container HEALTHCHECK or any probe would: "
        "on its first metrics_listen endpoint, else its first listen one (tcp, ssl, unix; a PROXY protocol header "
        "first for a haproxy: listener). Healthy: HTTP 200. Unhealthy: not listening, no answer in time, 503 "
        "while the bridge drains, or a config that cannot be read.",
        epilog=EXIT_STATUS,
    )
    p.add_argument("config", metavar="CONFIG", help="the bridge's TOML configuration file")
    p.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_seconds,
        default=3.0,
        help="for the connection and the answer each (default: 3)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the check; the exit status (argparse's own for ``--help``, 0, and a usage error, 2)."""
    try:
        args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # --help (0) or a usage error (2): argparse has printed why
        return e.code if isinstance(e.code, int) else 2
    healthy, what = check(args.config, args.timeout)
    if not healthy:
        print(f"unhealthy: {what}", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
