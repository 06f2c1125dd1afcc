"""A zmqwamp bridge with its own rules: who may connect, and who may reach which endpoint.

The rules here: only clients from loopback or private addresses (then the Origin allowlist);
everyone may call the allowed endpoints; subscribing needs a filter starting
with one's own authid and a dot, except for admins (and authids containing a dot
may not subscribe: theirs would overlap, docs/auth.md "Filters and their delimiter").

    python examples/custom_bridge.py --rep tcp://127.0.0.1:9999 --pub tcp://127.0.0.1:9000 \\
        [--listen tcp:8080:interface=127.0.0.1] [--users PATH] [--origin https://app.example.com]

Run it next to ``examples/echo_rep.py`` and ``examples/counter_pub.py``.  Users
come from a users file (``python -m zmqwamp.users add PATH alice``) or, without
``--users``, from two demo accounts: alice / alice-secret (role ``admin``)
and bob / bob-secret.  Clients log in with WAMP ``ticket`` or ``wampcra``.

Its hooks and its checker are tested in memory (no bridge process, no service to connect to) with
:mod:`zmqwamp.testing` in ``examples/test_custom_bridge.py``: start there to test your own.

The same class also runs under twistd, with the checkers from ``--auth``::

    PYTHONPATH=examples twistd -n zmqwamp --bridge-class custom_bridge.MyBridge \\
        --auth zmqwamp-users:users.txt --allow 'tcp://127.0.0.1:*'
"""

from __future__ import annotations

import argparse
import ipaddress

from twisted.cred import strcred
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.internet.defer import succeed
from zope.interface import implementer

from zmqwamp import Bridge
from zmqwamp.auth.cred import Identity


class MyBridge(Bridge):
    def websocket_allowed(self, request) -> bool:
        """Before the WebSocket upgrade: refuse (HTTP 403) clients outside our network, then check Origin."""
        kind, _, address = request.peer.partition(":")  # autobahn's peer: 'tcp4:10.1.2.3:53211'
        if kind in ("tcp4", "tcp6"):
            ip = ipaddress.ip_address(address.rsplit(":", 1)[0])
            if not (ip.is_loopback or ip.is_private):
                return False
        return super().websocket_allowed(request)  # the --origin allowlist

    def zmq_allowed(self, session, action: str, endpoint, options: dict):
        """Per request: everyone calls what --allow allows; only admins subscribe without a filter of their own.

        May also return a Deferred firing with a bool (e.g. after asking another service).
        """
        if not self.policy.allows(endpoint):  # the global --allow rules come first
            return False
        avatar = session.avatar
        if action == "call" or avatar.authrole == "admin":
            return True
        if "." in avatar.authid:  # 'john.smith.' would be inside john's 'john.': the delimiter must not be in authids
            return False
        return options["filter"].startswith(f"{avatar.authid}.".encode())  # e.g. alice reads 'alice.*'


@implementer(ICredentialsChecker)
class DemoUsers:
    """Two fixed accounts, as a custom Cred checker: returning an Identity sets the role."""

    credentialInterfaces = (IUsernamePassword, IUsernameHashedPassword)
    authprovider = "demo"
    users = {b"alice": (b"alice-secret", "admin"), b"bob": (b"bob-secret", "user")}

    def requestAvatarId(self, credentials):
        from twisted.cred.error import UnauthorizedLogin
        from twisted.internet.defer import fail

        secret, role = self.users.get(credentials.username, (b"\0not a password", ""))
        # checkPassword is constant-time in zmqwamp's credentials, for ticket and wampcra alike
        if credentials.checkPassword(secret) and role:
            return succeed(Identity(credentials.username.decode(), role))
        return fail(UnauthorizedLogin())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="tcp:8080:interface=127.0.0.1")
    parser.add_argument("--rep", default="tcp://127.0.0.1:9999")
    parser.add_argument("--pub", default="tcp://127.0.0.1:9000")
    parser.add_argument("--users", help="a users file (python -m zmqwamp.users); default: two demo accounts")
    parser.add_argument("--origin", action="append", default=[], help="allowed browser Origin, repeatable")
    args = parser.parse_args()
    checkers = [strcred.makeChecker(f"zmqwamp-users:{args.users}")] if args.users else [DemoUsers()]
    MyBridge(listen=args.listen, allow=[args.rep, args.pub], origins=args.origin, checkers=checkers).serve_forever()


if __name__ == "__main__":
    main()
