"""Reference: raw pyzmq DEALER -> REP round trips, no WAMP, no WebSocket.

    python bench/raw_zmq.py tcp://127.0.0.1:PORT --inflight 16 --t0 T0 --t1 T1   (CLOCK_MONOTONIC seconds)

Keeps --inflight requests (message-id envelope, like zmqwamp's DEALER) in
flight; prints RESULT {ok, hist} for the replies that complete in the window.
"""

import argparse
import json
import os
import sys
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import hist_add  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("--inflight", type=int, default=1)
    parser.add_argument("--t0", type=float, required=True, help="window start (CLOCK_MONOTONIC s); warm up before")
    parser.add_argument("--t1", type=float, required=True, help="window end (CLOCK_MONOTONIC s)")
    args = parser.parse_args()
    if not args.address.startswith("tcp://127."):
        parser.error("the bench only talks to 127.0.0.0/8")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(args.address)
    now = time.monotonic
    t0, t1 = args.t0, args.t1
    sent_at: dict[bytes, float] = {}
    hist: dict = {}
    ok = 0
    seq = 0
    for _ in range(args.inflight):
        rid = b"%x" % seq
        seq += 1
        sent_at[rid] = now()
        sock.send_multipart([rid, b"", b"hello"])
    while sent_at and now() < t1 + 5.0:
        if not sock.poll(1000):
            continue
        frames = sock.recv_multipart()
        e = now()
        s = sent_at.pop(frames[0], None)
        if s is None:
            continue
        if t0 <= e <= t1:
            ok += 1
            hist_add(hist, e - s)
        if e < t1:
            rid = b"%x" % seq
            seq += 1
            sent_at[rid] = now()
            sock.send_multipart([rid, b"", b"hello"])
    print("RESULT " + json.dumps({"ok": ok, "errors": len(sent_at), "hist": hist}), flush=True)
    sock.close()
    ctx.term()


if __name__ == "__main__":
    main()
