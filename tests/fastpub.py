"""A ZeroMQ PUB for load tests: ``<topic> <seq> <padding>`` at a steady rate, forever.

    python tests/fastpub.py tcp://127.0.0.1:* --rate 3000 --size 1024 [--topic seq] [--frames 100] [--count N]

Subscribers check the sequence numbers for gaps.  Prints the bound address.
"""

import argparse
import signal
import time

import zmq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bind")
    parser.add_argument("--rate", type=float, default=1000.0, help="messages per second")
    parser.add_argument("--size", type=int, default=100, help="bytes per message (padding included)")
    parser.add_argument("--topic", default="seq")
    parser.add_argument("--frames", type=int, default=0, help="empty frames after each message's first")
    parser.add_argument("--count", type=int, default=0, help="stop after this many messages (0: never)")
    parser.add_argument("--wait", action="store_true", help="send nothing before a subscriber has subscribed")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB if args.wait else zmq.PUB)  # an XPUB hears subscriptions: no slow joiner
    sock.setsockopt(zmq.SNDHWM, 100000)
    sock.bind(args.bind)
    print(f"fast PUB bound to {sock.getsockopt_string(zmq.LAST_ENDPOINT)}", flush=True)
    if args.wait:
        sock.recv()  # the first subscription
        time.sleep(0.2)
    topic = args.topic.encode()
    extra = [b""] * args.frames
    tick = 0.005
    per_tick = max(1, round(args.rate * tick))
    seq = 0
    start = time.monotonic()
    try:
        while True:
            for _ in range(per_tick):
                head = b"%s %d " % (topic, seq)
                body = head + b"x" * max(0, args.size - len(head))
                if extra:
                    sock.send_multipart([body, *extra])
                else:
                    sock.send(body)
                seq += 1
                if seq == args.count:
                    print(f"sent {seq} messages", flush=True)
                    signal.pause()  # stay bound (the subscriber keeps its connection) until stopped
            # stay on schedule: sleep until this batch's due time
            due = start + seq / (per_tick / tick)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close(linger=0)
        ctx.term()


if __name__ == "__main__":
    main()
