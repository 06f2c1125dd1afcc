"""`make demo`: the bridge plus the example REP and PUB services, allowing exactly their endpoints.

Stops everything it started (by PID) on Ctrl-C or SIGTERM, or when any part exits; Ctrl-C is a
normal way to stop it: quiet, exit 0.  A port already in use is one line and exit 1.
"""

import argparse
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def port_in_use(host: str, port: int) -> bool:
    """Is something listening there?  (The parts would fail a moment later, less clearly.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the bridge binds: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def busy_ports(args) -> list[str]:
    out = []
    listen = args.listen.split(":")
    if listen[0] in ("tcp", "tcp6") and listen[1].isdigit() and int(listen[1]):
        interface = next((p.split("=", 1)[1] for p in listen[2:] if p.startswith("interface=")), "0.0.0.0")
        if port_in_use(interface, int(listen[1])):
            out.append(f"{interface}:{listen[1]} (the bridge, --listen {args.listen}; make demo DEMO_LISTEN=...)")
    for name, address in (("REP", args.rep), ("PUB", args.pub)):
        parsed = urllib.parse.urlsplit(address)
        if parsed.scheme == "tcp" and parsed.port and port_in_use(parsed.hostname, parsed.port):
            out.append(f"{parsed.hostname}:{parsed.port} (the example {name}, {address}; make demo DEMO_{name}=...)")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="tcp:8080:interface=127.0.0.1")
    parser.add_argument("--rep", default="tcp://127.0.0.1:9999")
    parser.add_argument("--pub", default="tcp://127.0.0.1:9000")
    args = parser.parse_args()
    busy = busy_ports(args)
    if busy:
        print(f"zmqwamp demo: port already in use: {'; '.join(busy)}", file=sys.stderr)
        return 1
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(signal.SIGTERM))
    signal.signal(signal.SIGINT, lambda *_: stop.append(signal.SIGINT))
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
    print(
        f"  call  {args.rep}  (echo REP)\n  subscribe {args.pub}  (counter PUB, filter 'hugo' or 'otto')\n"
        "  Ctrl-C stops everything.\n",
        flush=True,
    )
    while not stop and all(p.poll() is None for p in procs):
        time.sleep(0.2)
    # Ctrl-C in a terminal reaches every process of its group: give them a moment to stop by themselves
    # (a second signal is harmless, but one is enough), then stop the rest.
    deadline = time.monotonic() + (3.0 if stop == [signal.SIGINT] else 0)
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.05)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    failed = [p for p in procs if p.returncode not in (0, -signal.SIGTERM, -signal.SIGINT)]
    if failed and not stop:
        print("zmqwamp demo: a part stopped (see above); stopped the others", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
