"""Who a session is: Twisted Cred portal, realm and the avatar it returns.

Every login goes through a :class:`twisted.cred.portal.Portal`.  The realm
returns an :class:`IZmqAvatar`, which carries the WAMP identity (authid,
authrole, method, provider) and may narrow, per session, which endpoints the
session reaches.  The global ``--allow`` rules are applied before it.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.checkers import ANONYMOUS, AllowAnonymousAccess, ICredentialsChecker
from twisted.cred.credentials import Anonymous
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface, implementer

from zmqwamp.endpoints import Endpoint


class IZmqAvatar(Interface):
    authid = Attribute("WAMP authid (str)")
    authrole = Attribute("WAMP authrole (str)")
    authmethod = Attribute("WAMP authentication method used (str)")
    authprovider = Attribute("who vouched for the identity (str)")

    def zmq_allowed(action: str, endpoint: Endpoint, options: dict[str, Any]) -> "bool | Deferred[bool]":
        """May this session do ``action`` ('call' or 'subscribe') on ``endpoint``?"""


@implementer(IZmqAvatar)
class SessionAvatar:
    """The default avatar: an identity, and no rules beyond the global ones."""

    def __init__(self, authid: str, authrole: str, authmethod: str, authprovider: str) -> None:
        self.authid = authid
        self.authrole = authrole
        self.authmethod = authmethod
        self.authprovider = authprovider

    def zmq_allowed(self, action: str, endpoint: Endpoint, options: dict[str, Any]) -> bool:
        return True


@implementer(IRealm)
class BridgeRealm:
    def requestAvatar(self, avatarId, mind, *interfaces):
        if IZmqAvatar not in interfaces:
            raise NotImplementedError("zmqwamp only provides IZmqAvatar")
        method = mind or "anonymous"
        if avatarId is ANONYMOUS:
            avatar = SessionAvatar("anonymous", "anonymous", method, "anonymous")
        else:
            authid = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else str(avatarId)
            avatar = SessionAvatar(authid, "user", method, "cred")
        return IZmqAvatar, avatar, lambda: None


def build_portal(checkers: list[ICredentialsChecker], anonymous: bool) -> Portal:
    portal = Portal(BridgeRealm())
    for checker in checkers:
        portal.registerChecker(checker)
    if anonymous:
        portal.registerChecker(AllowAnonymousAccess())
    return portal


def login_anonymous(portal: Portal) -> Deferred:
    """Log in without credentials; fails unless anonymous access is enabled."""
    return portal.login(Anonymous(), "anonymous", IZmqAvatar)
