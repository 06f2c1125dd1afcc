"""A plain ZeroMQ PUB for the fan-out scenario: timestamped JSON messages at a set rate.

Like examples/counter_pub.py (binds, prints the bound address), but paced by
the bench (scenarios.py, through targets.Target) on stdin: "STEP <step> <rate>
<duration> <w0> <w1>" publishes rate*duration messages {"s", "n", "t"
(CLOCK_MONOTONIC at send), "w0", "w1", "pad"} and prints "DONE <step> <count>";
"QUIT" (or end of stdin) exits.
"""

import json
import os
import sys

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import event_payload, paced  # noqa: E402


def main() -> None:
    bind = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:*"
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.bind(bind)
    print(f"timed PUB bound to {sock.getsockopt_string(zmq.LAST_ENDPOINT)}", flush=True)
    try:
        for line in sys.stdin:
            cmd = line.split()
            if not cmd:
                continue
            if cmd[0] == "QUIT":
                break
            if cmd[0] == "STEP":
                step, rate, duration, w0, w1 = int(cmd[1]), float(cmd[2]), float(cmd[3]), float(cmd[4]), float(cmd[5])
                dumps, send = json.dumps, sock.send
                n = paced(rate, duration, lambda seq: send(dumps(event_payload(step, seq, w0, w1)).encode()))  # noqa: B023
                print(f"DONE {step} {n}", flush=True)
    finally:
        sock.close(linger=0)
        ctx.term()


if __name__ == "__main__":
    main()
