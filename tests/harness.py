"""Start real processes for end-to-end tests: the bridge (twistd) and the example services.

Every process is started here, bound to 127.0.0.1 on a free port, and stopped
by its PID.  Ports are read back from what the process prints, so there is no
race for a port.
"""

from __future__ import annotations

import atexit
import datetime
import ipaddress
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent


_RUNNING: set[Process] = set()


@atexit.register
def _stop_leftovers() -> None:
    """A test run that dies early must not leave its processes behind."""
    for p in list(_RUNNING):
        p.stop(signal.SIGKILL, timeout=2)


class Process:
    """A child process whose output is collected; ``wait_for`` a line pattern."""

    def __init__(self, argv: list[str], env: dict | None = None, cwd: str | None = None, new_session: bool = False) -> None:
        _RUNNING.add(self)
        self.argv = argv
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=cwd,
            start_new_session=new_session,  # its own process group, e.g. to signal all of it as systemd would
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    match = rx.search(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._cond.wait(0.1)):
                    raise AssertionError(
                        f"{self.argv[:3]}: no line matching {pattern!r} (exit={self.proc.poll()}):\n{self.output[-4000:]}"
                    )
                self._cond.wait(min(left, 0.2))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        _RUNNING.discard(self)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_rep(bind: str = "tcp://127.0.0.1:*", delay: float = 0.0) -> tuple[Process, str]:
    argv = [sys.executable, str(EXAMPLES / "echo_rep.py"), bind]
    if delay:
        argv += ["--delay", str(delay)]
    p = Process(argv)
    return p, p.wait_for(r"bound to (\S+)").group(1)


def start_pub(bind: str = "tcp://127.0.0.1:*", interval: float = 0.05, topics: str = "hugo,otto") -> tuple[Process, str]:
    p = Process([sys.executable, str(EXAMPLES / "counter_pub.py"), bind, "--interval", str(interval), "--topics", topics])
    return p, p.wait_for(r"bound to (\S+)").group(1)


def start_bridge(
    *args: str, listen: str = "tcp:0:interface=127.0.0.1", cwd: str | None = None, env: dict | None = None
) -> tuple[Process, str]:
    """Run ``twistd -n zmqwamp``; return it and its ws:// URL."""
    argv = [str(BIN / "twistd"), "-n", "--pidfile=", "zmqwamp", "--listen", listen, *args]
    # Not the checkout: the plugin must be found through the installed package.
    p = Process(argv, env=env, cwd=cwd or tempfile.gettempdir())
    try:
        port = p.wait_for(r"starting on (\d+)").group(1)
    except AssertionError:
        p.stop()
        raise
    return p, f"ws://127.0.0.1:{port}/ws"


class CertFiles(NamedTuple):
    key: Path
    cert: Path
    pem: Path  # the certificate then the key, in one file (HAProxy's ``crt``)


def make_cert(directory: Path) -> CertFiles:
    """A self-signed certificate for ``localhost`` and 127.0.0.1 in ``directory``: an ``ssl:`` listener takes
    ``key`` and ``cert``, nginx the same, HAProxy ``pem``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    files = CertFiles(directory / "key.pem", directory / "cert.pem", directory / "site.pem")
    files.key.write_bytes(key_pem)
    files.cert.write_bytes(cert_pem)
    files.pem.write_bytes(cert_pem + key_pem)
    return files
