"""``--workers N``: N bridge processes sharing each listening port.

The bridge keeps no state that processes must share (ZeroMQ fans in and out),
so capacity is more processes.  The supervisor (the process ``twistd`` runs)
opens N ``SO_REUSEPORT`` sockets per ``tcp:`` listen endpoint, so the kernel
spreads new connections across them, hands socket *i* of each to worker *i*
(``--inherit-fd``), restarts a worker that dies, and on stop sends every worker
SIGTERM and waits for its graceful drain.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.internet import error as ierror
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.interfaces import IProcessTransport, IStreamServerEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.protocols.haproxy import proxyEndpoint

from zmqwamp.internals import lacks
from zmqwamp.service.descriptions import description_fields

log = Logger()


class WorkersUnsupported(ValueError):
    """The listen endpoints cannot be shared between worker processes."""


@dataclass(frozen=True)
class TCPListen:
    interface: str
    port: int
    backlog: int
    proxy: bool = False  # haproxy:tcp:...: the workers read a PROXY protocol header first


# What a tcp: endpoint of Twisted's keeps of its description (private attributes), and its default backlog.
TCP_ENDPOINT_FIELDS = ("_interface", "_port", "_backlog")
DEFAULT_BACKLOG = 50


def tcp_listens(reactor, descriptions: list[str]) -> list[TCPListen]:
    """The host/port of each ``tcp:`` (or ``haproxy:tcp:``) endpoint description; anything else is refused."""
    out = []
    for description in descriptions:
        proxy = description.startswith("haproxy:")
        plain = description[len("haproxy:") :] if proxy else description
        if plain.split(":", 1)[0] not in ("tcp", "tcp6"):
            raise WorkersUnsupported(
                f"--workers shares plain tcp: listen endpoints only (haproxy:tcp: too); {description!r} is not one "
                "(terminate TLS in front, or run one process per TLS port)"
            )
        endpoint = serverFromString(reactor, plain)  # refuses a bad description
        what = f"this Twisted's {type(endpoint).__name__}"
        if lacks(endpoint, TCP_ENDPOINT_FIELDS, what, "its fields are read from the description"):
            _, args, kwargs = description_fields(plain)
            interface = kwargs.get("interface", "")
            port = int(kwargs.get("port") or args[0])
            backlog = int(kwargs.get("backlog", DEFAULT_BACKLOG))
        else:  # what Twisted parsed out of the description
            interface, port, backlog = endpoint._interface, endpoint._port, endpoint._backlog
        out.append(TCPListen(interface or "0.0.0.0", port, backlog, proxy))
    return out


def open_shared_sockets(listen: TCPListen, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one address with SO_REUSEPORT (port 0: the first one picks)."""
    family = socket.AF_INET6 if ":" in listen.interface else socket.AF_INET
    sockets = []
    port = listen.port
    for _ in range(count):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((listen.interface, port))
        port = s.getsockname()[1]
        s.listen(listen.backlog)
        s.setblocking(False)  # the worker's reactor accepts until EAGAIN
        s.set_inheritable(True)
        sockets.append(s)
    return sockets


class _Worker(ProcessProtocol):
    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.ended: Deferred = Deferred()

    def processEnded(self, reason) -> None:
        code = getattr(reason.value, "exitCode", None)
        self.supervisor._ended(self, code)
        self.ended.callback(code)


class WorkerSupervisor(Service):
    """Runs and watches the worker processes; has no WebSocket or ZeroMQ of its own."""

    restart_delay = 1.0

    def __init__(
        self,
        reactor,
        worker_args: list[str],
        listens: list[TCPListen],
        count: int,
        stop_timeout: float,
        log_format: str = "text",
    ) -> None:
        self.reactor = reactor
        self.log_format = log_format
        self.worker_args = worker_args
        self.listens = listens
        self.count = count
        self.stop_timeout = stop_timeout
        self.workers: dict[int, tuple[_Worker, IProcessTransport]] = {}
        self._sockets: list[list[socket.socket]] = []

    def setServiceParent(self, parent):
        super().setServiceParent(parent)
        from zmqwamp.service.logs import use_log_format

        use_log_format(parent, self.log_format)  # the supervisor's lines in the workers' format

    def privilegedStartService(self) -> None:
        """Bind the shared ports before twistd drops privileges; a port in use is one clear line."""
        from twisted.internet.error import CannotListenError

        from zmqwamp.service.lifecycle import exit_cannot_listen, install_stop_signals

        install_stop_signals(self.reactor)  # a Ctrl-C during the start stops cleanly too
        super().privilegedStartService()

        try:
            for listen in self.listens:
                self._sockets.append(open_shared_sockets(listen, self.count))
        except OSError as e:
            for group in self._sockets:
                for s in group:
                    s.close()
            exit_cannot_listen(CannotListenError(listen.interface, listen.port, e))

    def startService(self) -> None:
        super().startService()
        if not self._sockets:  # started without privilegedStartService (e.g. by hand, in tests)
            self._sockets = [open_shared_sockets(listen, self.count) for listen in self.listens]
        for listen, group in zip(self.listens, self._sockets, strict=False):
            log.info(
                "supervisor: {n} workers share {host}:{port}",
                n=self.count,
                host=listen.interface,
                port=group[0].getsockname()[1],
            )
        for index in range(self.count):
            self._spawn(index)
        import signal

        from zmqwamp.service.lifecycle import install_stop_signals

        signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self._signal_all, "HUP"))
        self.reactor.callWhenRunning(install_stop_signals, self.reactor)

    def _signal_all(self, name: str) -> None:
        for _, transport in list(self.workers.values()):
            try:
                transport.signalProcess(name)
            except ierror.ProcessExitedAlready:
                pass

    def _spawn(self, index: int) -> None:
        fds = [group[index].fileno() for group in self._sockets]
        args = [sys.executable, "-m", "zmqwamp", *self.worker_args]
        for fd, listen in zip(fds, self.listens, strict=False):
            args += ["--inherit-fd", f"haproxy:{fd}" if listen.proxy else str(fd)]
        child_fds = {0: "w", 1: 1, 2: 2, **{fd: fd for fd in fds}}
        protocol = _Worker(self, index)
        transport = self.reactor.spawnProcess(protocol, sys.executable, args, env=os.environ.copy(), childFDs=child_fds)
        self.workers[index] = (protocol, transport)
        log.info("supervisor: worker {index} started, pid {pid}", index=index, pid=transport.pid)

    def _ended(self, worker: _Worker, code) -> None:
        self.workers.pop(worker.index, None)
        if self.running:
            log.warn("supervisor: worker {index} exited ({code}); restarting", index=worker.index, code=code)
            self.reactor.callLater(self.restart_delay, self._restart, worker.index)

    def _restart(self, index: int) -> None:
        if self.running and index not in self.workers:
            self._spawn(index)

    def stopService(self):
        super().stopService()
        waits = []
        for protocol, transport in list(self.workers.values()):
            try:
                transport.signalProcess("TERM")
            except ierror.ProcessExitedAlready:
                continue
            waits.append(protocol.ended)
            self.reactor.callLater(self.stop_timeout, self._kill, transport)
        for group in self._sockets:
            for s in group:
                s.close()

        return DeferredList(waits)

    @staticmethod
    def _kill(transport) -> None:
        try:
            transport.signalProcess("KILL")
        except ierror.ProcessExitedAlready:
            pass


def inherited_endpoint(reactor, fd: int, proxy: bool = False) -> IStreamServerEndpoint:
    """The endpoint of an inherited listening socket (a worker's share of the supervisor's port).

    ``proxy``: the port speaks the PROXY protocol (``haproxy:tcp:...``), as
    ``serverFromString`` would wrap it.
    """
    with socket.socket(fileno=os.dup(fd)) as s:
        family = s.family
    endpoint: IStreamServerEndpoint = AdoptedStreamServerEndpoint(reactor, fd, family)
    return proxyEndpoint(endpoint) if proxy else endpoint


def worker_args(raw_args: list[str]) -> list[str]:
    """The supervisor's own arguments, less those that only it uses."""
    out, skip = [], False
    for arg in raw_args:
        if skip:
            skip = False
            continue
        if arg in ("--workers", "--listen", "--inherit-fd"):
            skip = True
            continue
        if arg.startswith(("--workers=", "--listen=", "--inherit-fd=")):
            continue
        out.append(arg)
    return out
