"""A plain ZeroMQ REP service that knows nothing of zmqwamp: replies 'got this <msg>'.

    python examples/echo_rep.py tcp://127.0.0.1:9999 [--delay SECONDS]

``--delay`` makes it answer late (or, with a large value, never), for tests.
Binding to ``tcp://127.0.0.1:*`` picks a free port; the bound address is printed.
"""

import argparse
import signal
import time

import zmq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bind", nargs="?", default="tcp://127.0.0.1:9999", help="address to bind")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each reply")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.bind(args.bind)
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
    main()
