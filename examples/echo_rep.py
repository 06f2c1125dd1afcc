"""A plain ZeroMQ REP service that knows nothing of zmqwamp: replies 'got this <msg>'.

    python examples/echo_rep.py tcp://127.0.0.1:9999 [--delay SECONDS]

``--delay`` makes it answer late (or, with a large value, never), for tests.
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
    parser.add_argument("bind", nargs="?", default="tcp://127.0.0.1:9999", help="address to bind")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each reply")
    args = parser.parse_args()
    stop_on_signals()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    try:
        sock.bind(args.bind)
    except zmq.ZMQError as e:
        print(f"echo REP: cannot bind {args.bind}: {e}", file=sys.stderr, flush=True)
        sock.close(linger=0)
        ctx.term()
        sys.exit(1)
    print(f"echo REP bound to {sock.getsockopt_string(zmq.LAST_ENDPOINT)}", flush=True)
    try:
        while True:
            frames = sock.recv_multipart()
            if args.delay:
                time.sleep(args.delay)
            sock.send_multipart([b"got this " + frames[0], *frames[1:]])
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
