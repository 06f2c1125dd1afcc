"""A REP-compatible service (ROUTER) that answers every request ``--delay`` seconds later, many at once.

    python tests/delayrep.py tcp://127.0.0.1:* --delay 1.0

A plain REP answers one request at a time; this one keeps any number in flight,
so a test can have hundreds of calls waiting when it stops the bridge.  Replies
are ``got this <first frame>``, as examples/echo_rep.py.
"""

import argparse
import heapq
import itertools
import signal
import time

import zmq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bind")
    parser.add_argument("--delay", type=float, default=1.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(args.bind)
    print(f"delay REP bound to {sock.getsockopt_string(zmq.LAST_ENDPOINT)}", flush=True)
    due: list = []
    order = itertools.count()
    try:
        while True:
            timeout = max(0, int((due[0][0] - time.monotonic()) * 1000)) if due else 100
            if sock.poll(timeout):
                frames = sock.recv_multipart()
                split = frames.index(b"") + 1  # routing envelope, then the request
                heapq.heappush(due, (time.monotonic() + args.delay, next(order), frames[:split], frames[split:]))
            while due and due[0][0] <= time.monotonic():
                _, _, envelope, body = heapq.heappop(due)
                sock.send_multipart(envelope + [b"got this " + body[0], *body[1:]])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close(linger=0)
        ctx.term()


if __name__ == "__main__":
    main()
