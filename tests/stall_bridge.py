"""A ``--bridge-class`` whose authorization hook blocks the reactor for one endpoint (tests of the reactor-lag metric).

    twistd -n zmqwamp --bridge-class stall_bridge.StallBridge ...   (with tests/ on PYTHONPATH)

For ``tcp://127.0.0.1:8`` the hook busy-waits ``STALL`` seconds and then refuses (as a hook doing
blocking I/O, or a CPU-bound bug, would): nothing else is served meanwhile.  Every other endpoint
gets the default rules.
"""

import time

from zmqwamp import Bridge

STALLING = "tcp://127.0.0.1:8"
STALL = 1.5


class StallBridge(Bridge):
    def zmq_allowed(self, session, action, endpoint, options):
        if endpoint.address == STALLING:
            until = time.monotonic() + STALL
            while time.monotonic() < until:
                pass
            return False
        return super().zmq_allowed(session, action, endpoint, options)
