"""A plain ZeroMQ PUB service: publishes a counter once a second, to two topics.

Each tick publishes ``hugo <n>`` and ``otto <n>``, so a subscriber's filter
(``hugo``) visibly selects half of the stream.

    python examples/counter_pub.py tcp://127.0.0.1:9000 [--interval 1.0]

Binding to ``tcp://127.0.0.1:*`` picks a free port; the bound address is printed.
"""

import argparse
import signal
import sys
import time

import zmq


def stop_on_signals() -> None:
    """SIGINT (Ctrl-C, which reaches every process of the terminal's group) and SIGTERM stop the loop
    once; a second signal while closing is ignored instead of interrupting the cleanup with a traceback."""

    def handler(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bind", nargs="?", default="tcp://127.0.0.1:9000", help="address to bind")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between ticks")
    parser.add_argument("--topics", default="hugo,otto", help="comma-separated message prefixes")
    args = parser.parse_args()
    stop_on_signals()
    topics = [t.encode() for t in args.topics.split(",") if t]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    try:
        sock.bind(args.bind)
    except zmq.ZMQError as e:
        print(f"counter PUB: cannot bind {args.bind}: {e}", file=sys.stderr, flush=True)
        sock.close(linger=0)
        ctx.term()
        sys.exit(1)
    print(f"counter PUB bound to {sock.getsockopt_string(zmq.LAST_ENDPOINT)}", flush=True)
    n = 0
    try:
        while True:
            for topic in topics:
                sock.send(b"%s %d" % (topic, n))
            n += 1
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close(linger=0)
        ctx.term()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # a signal before the loop started: stop just as quietly
        pass
