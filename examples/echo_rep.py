"""A plain ZeroMQ REP service that knows nothing of zmqwamp: replies 'got this <msg>'.

    python examples/echo_rep.py tcp://127.0.0.1:9999
"""

import argparse
import signal

import zmq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bind", nargs="?", default="tcp://127.0.0.1:9999", help="address to bind")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.bind(args.bind)
    print(f"echo REP bound to {args.bind}", flush=True)
    try:
        while True:
            frames = sock.recv_multipart()
            sock.send_multipart([b"got this " + frames[0], *frames[1:]])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close(linger=0)
        ctx.term()


if __name__ == "__main__":
    main()
