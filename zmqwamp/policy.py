"""The global allow rules: which endpoints the bridge may reach at all.

Deny by default.  An endpoint is allowed when it is a configured alias or its
address matches one of the operator's shell-style glob patterns.  Per-user rules
live with the avatar (:mod:`zmqwamp.auth`) and only ever narrow this.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterable

from zmqwamp.endpoints import Endpoint


class EndpointPolicy:
    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns: tuple[str, ...] = tuple(patterns)

    def allows(self, endpoint: Endpoint) -> bool:
        if endpoint.alias is not None:
            return True
        return any(fnmatchcase(endpoint.address, p) for p in self.patterns)
