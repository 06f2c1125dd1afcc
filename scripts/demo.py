"""`make demo`: the bridge plus the example REP and PUB services, allowing exactly their endpoints.

Stops everything it started (by PID) on Ctrl-C or SIGTERM, or when any part exits.
"""

import argparse
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="tcp:8080:interface=127.0.0.1")
    parser.add_argument("--rep", default="tcp://127.0.0.1:9999")
    parser.add_argument("--pub", default="tcp://127.0.0.1:9000")
    args = parser.parse_args()
    procs = [
        subprocess.Popen([sys.executable, str(ROOT / "examples/echo_rep.py"), args.rep]),
        subprocess.Popen([sys.executable, str(ROOT / "examples/counter_pub.py"), args.pub]),
        subprocess.Popen(
            [str(BIN / "twistd"), "-n", "--pidfile=", "zmqwamp", "--listen", args.listen, "--anonymous",
             "--allow", args.rep, "--allow", args.pub],
            cwd=ROOT,
        ),
    ]
    port = args.listen.split(":")[1]
    # The demo page (served at /) reads the endpoints it uses from its query string.
    page = f"http://localhost:{port}/?" + urllib.parse.urlencode({"rep": args.rep, "pub": args.pub}, safe=":/")
    print(f"\nzmqwamp demo: open {page} in a browser; WebSocket at ws://localhost:{port}/ws", flush=True)
    print(f"  call  {args.rep}  (echo REP)\n  subscribe {args.pub}  (counter PUB, filter 'hugo' or 'otto')\n  Ctrl-C stops everything.\n", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        while not stop and all(p.poll() is None for p in procs):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    failed = [p for p in procs if p.returncode not in (0, -signal.SIGTERM)]
    return 1 if failed and not stop else 0


if __name__ == "__main__":
    sys.exit(main())
