# twistd scans this file at every start: import nothing heavy here.
from twisted.application.service import ServiceMaker

zmqwamp = ServiceMaker(
    "zmqwamp",
    "zmqwamp.service.tap",
    "WAMP v2 over WebSocket <-> ZeroMQ REQ/REP and PUB/SUB bridge",
    "zmqwamp",
)
