"""Host names of tcp endpoints, resolved off the reactor and off libzmq's I/O thread.

libzmq resolves a ``tcp://`` host name itself, synchronously, on the context's I/O
thread, which moves the messages of every socket, and again on every reconnect: a
name that takes seconds to resolve stalled every session's calls for those seconds,
for as long as its socket lived.  So the bridge resolves names itself, in a small
thread pool of its own (not the reactor's, which the users-file checker needs, and
whose threads the reactor waits for at shutdown), and connects the zmq socket to the
IPv4 address it got.  The connection is still known by the name the client used.

Answers are cached for ``ttl`` seconds, failures for ``negative_ttl``, at most
``size`` names; concurrent lookups of one name share one thread.  A lookup with no
answer after ``timeout`` seconds fails for those waiting (its thread still finishes
and fills the cache).  IPv4 only, as libzmq without ``ZMQ_IPV6``.
"""

from __future__ import annotations

import socket
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import partial

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from zmqwamp.upstream.endpoints import ip_version, split_tcp

log = Logger()


class NameNotResolved(Exception):
    """A tcp host name gave no address."""


def _first_ipv4(getaddrinfo: Callable, host: str) -> str:
    """Runs in a pool thread: the first IPv4 address of ``host`` (in the resolver's order)."""
    try:
        infos = getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:  # gaierror, or a label IDNA cannot encode
        raise NameNotResolved(str(e) or type(e).__name__) from None
    for family, _, _, _, sockaddr in infos:
        if family == socket.AF_INET:
            return sockaddr[0]
    raise NameNotResolved("no IPv4 address")


class HostResolver:
    """``tcp://name:port`` -> ``tcp://a.b.c.d:port``, looked up in threads of its own, cached."""

    def __init__(
        self,
        reactor,
        threads: int = 4,
        ttl: float = 60.0,
        negative_ttl: float = 10.0,
        timeout: float = 10.0,
        size: int = 1024,
        getaddrinfo: Callable = socket.getaddrinfo,
        metrics=None,
    ) -> None:
        self._reactor = reactor
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.timeout = timeout
        self.size = size
        self._getaddrinfo = getaddrinfo
        self._metrics = metrics
        self._cache: OrderedDict[str, tuple[float, str | None, str]] = OrderedDict()  # name -> (expiry, ip, error)
        self._waiting: dict[str, list[Deferred]] = {}  # lookups in progress
        self._pool = ThreadPool(0, threads, "zmqwamp-names")
        # a lookup stuck in the system resolver must not hold up the bridge's exit
        self._pool.threadFactory = partial(threading.Thread, daemon=True)  # type: ignore[assignment]

    def connect_address(self, address: str) -> str | Deferred:
        """The address to connect a zmq socket to for ``address``.

        ``address`` itself unless it is ``tcp://`` with a host name; then the
        same with the name's IPv4 address: at once if cached, else a Deferred.
        Raises (or the Deferred fails with) :class:`NameNotResolved`.
        """
        hostport = split_tcp(address)
        if hostport is None or ip_version(hostport[0]) is not None:
            return address
        host, port = hostport
        ip = self.lookup(host)
        if isinstance(ip, Deferred):
            return ip.addCallback(lambda ip: f"tcp://{ip}:{port}")
        return f"tcp://{ip}:{port}"

    def lookup(self, host: str) -> str | Deferred:
        """The IPv4 address of ``host``: at once when cached, else a Deferred."""
        entry = self._cache.get(host)
        if entry is not None:
            expiry, ip, error = entry
            if expiry > self._reactor.seconds():
                self._cache.move_to_end(host)
                if ip is None:
                    raise NameNotResolved(f"host name {host!r} did not resolve: {error}")
                return ip
            del self._cache[host]
        waiting = self._waiting.get(host)
        if waiting is None:
            waiting = self._waiting[host] = []
            self._in_thread(_first_ipv4, self._getaddrinfo, host).addBoth(self._resolved, host)
        d: Deferred = Deferred()
        waiting.append(d)
        d.addTimeout(self.timeout, self._reactor, onTimeoutCancel=partial(self._timed_out, host))
        return d

    def _in_thread(self, f: Callable, *args) -> Deferred:
        if not self._pool.started:
            self._pool.start()
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    @staticmethod
    def _timed_out(host: str, result, timeout: float):
        raise NameNotResolved(f"host name {host!r} did not resolve within {timeout:g}s")

    def _resolved(self, result, host: str) -> None:
        waiting = self._waiting.pop(host, [])
        now = self._reactor.seconds()
        if isinstance(result, Failure):
            error = str(result.value) if result.check(NameNotResolved) else repr(result.value)
            self._remember(host, (now + self.negative_ttl, None, error))
            self._count("failed")
            log.info("host name {host} did not resolve: {error}", host=host[:200], error=error[:200])
            for d in waiting:
                if not d.called:
                    d.errback(NameNotResolved(f"host name {host!r} did not resolve: {error}"))
            return
        self._remember(host, (now + self.ttl, result, ""))
        self._count("ok")
        for d in waiting:
            if not d.called:
                d.callback(result)

    def _remember(self, host: str, entry: tuple[float, str | None, str]) -> None:
        self._cache[host] = entry
        self._cache.move_to_end(host)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.name_lookups.labels(outcome).inc()

    def close(self) -> None:
        """Let the pool's threads end (idle ones now, busy ones when their lookup returns); no waiting."""
        if self._pool.started:
            self._pool.adjustPoolsize(0, 0)
