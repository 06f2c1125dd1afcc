"""A ``--bridge-class`` whose authorization hook never answers for one endpoint (tests of the authorization deadline).

    twistd -n zmqwamp --bridge-class hang_bridge.HangBridge ...   (with tests/ on PYTHONPATH)

For ``tcp://127.0.0.1:9`` the hook returns a Deferred that never fires (as a
hook waiting on a database that hangs would); every other endpoint gets the
default rules.
"""

from twisted.internet.defer import Deferred

from zmqwamp import Bridge

HANGING = "tcp://127.0.0.1:9"


class HangBridge(Bridge):
    def zmq_allowed(self, session, action, endpoint, options):
        if endpoint.address == HANGING:
            return Deferred()
        return super().zmq_allowed(session, action, endpoint, options)
