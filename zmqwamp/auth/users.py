"""A users file with salted PBKDF2 keys and roles, its Cred checker, and its CLI.

The file holds, per user, a WAMP-CRA salted key -- base64 PBKDF2-HMAC-SHA256 of
the password -- never the password::

    # authid role pbkdf2-sha256 iterations keylen salt key
    alice user pbkdf2-sha256 100000 32 hVtE1c6t1Oe1Iax3dPq2NA 3PsR...=

The checker (``--auth zmqwamp-users:PATH``) serves both WAMP methods:

* ``ticket``: the key is derived again from the ticket (in a thread, it is slow on
  purpose) and compared in constant time;
* ``wampcra``: the CHALLENGE carries salt, iterations and keylen; the client
  derives the same key and signs the challenge with it.

An unknown authid gets a decoy salt (and iterations, keylen) and the same
amount of work as a known one, so neither the CHALLENGE nor the timing tells
whether it exists.  Decoys derive from a secret kept in the file itself::

    # decoy-secret: 3q2+7wAAAA...

so every process reading the file (``--workers``, restarts, hosts behind a load
balancer) gives an unknown authid the same salt, as a real user always gets
hers.  The CLI writes the secret when a file has none.  A file without one
still works (a warning at load says how to add it), with decoys that differ
from process to process, which tells a client that compares two CHALLENGEs
from two processes that the authid does not exist.

Note that for WAMP-CRA the derived key *is* the secret: whoever reads this file
can log in with ``wampcra`` (not with ``ticket``).  Keep it mode 0600, as the CLI
writes it, or 0640 with the group of the service that reads it (``--group``; a
systemd unit's ``User=`` cannot read a root-owned 0600 file).  The file is re-read when it
changes; a broken edit keeps the last good content (and logs why).

Its command-line tool is :mod:`zmqwamp.users` (``python -m zmqwamp.users``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from zope.interface import implementer

from zmqwamp.auth.cred import (
    DEFAULT_ROLE,
    Identity,
    IdentityChange,
    IIdentitySource,
    IWampCraSalts,
    Salt,
    constant_time_equal,
    derive_key,
    to_bytes,
)

log = Logger()


SCHEME = "pbkdf2-sha256"


DEFAULT_ITERATIONS = 100_000  # ~25 ms in CPython, ~0.6 s in the browser's crypto-js


DEFAULT_KEYLEN = 32


HEADER = (
    "# zmqwamp users file, managed with `python -m zmqwamp.users`. Keys are PBKDF2-derived, never passwords.\n"
    "# authid role pbkdf2-sha256 iterations keylen salt key\n"
)


DECOY_SECRET = "# decoy-secret:"  # the line holding the secret decoy salts derive from (base64)


DECOY_SECRET_BYTES = 32


class UsersFileError(ValueError):
    """The users file cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class UserRecord:
    authid: str
    role: str
    iterations: int
    keylen: int
    salt: str
    key: bytes  # base64 of the derived key, as WAMP-CRA uses it

    def line(self) -> str:
        key = self.key.decode("ascii")
        return f"{self.authid} {self.role} {SCHEME} {self.iterations} {self.keylen} {self.salt} {key}\n"


def check_name(what: str, name: str) -> str:
    if not name or any(c.isspace() or not c.isprintable() for c in name) or name.startswith("#"):
        raise UsersFileError(f"{what} {name!r}: must be non-empty, printable, without spaces, not starting with '#'")
    return name


def make_record(
    authid: str,
    password: str | bytes,
    role: str = DEFAULT_ROLE,
    iterations: int = DEFAULT_ITERATIONS,
    keylen: int = DEFAULT_KEYLEN,
) -> UserRecord:
    if iterations < 1000:
        raise UsersFileError("iterations must be at least 1000")
    if not 16 <= keylen <= 64:
        raise UsersFileError("keylen must be 16..64 bytes")
    if not password:
        raise UsersFileError("the password must not be empty")
    salt = secrets.token_urlsafe(16)
    return UserRecord(
        check_name("authid", authid),
        check_name("role", role),
        iterations,
        keylen,
        salt,
        derive_key(password, salt, iterations, keylen),
    )


@dataclass(frozen=True)
class UsersFile:
    """A users file's content: its users, and the secret its decoy salts derive from (None: not there)."""

    users: dict[str, UserRecord]
    decoy_secret: bytes | None = None


def new_decoy_secret() -> bytes:
    return secrets.token_bytes(DECOY_SECRET_BYTES)


def parse_users_file(text: str, source: str = "<users>") -> UsersFile:
    users: dict[str, UserRecord] = {}
    decoy_secret = None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        where = f"{source}:{number}"
        if line.startswith(DECOY_SECRET):
            if decoy_secret is not None:
                raise UsersFileError(f"{where}: a second decoy secret")
            decoy_secret = _parse_secret(where, line[len(DECOY_SECRET) :].strip())
            continue
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 7 or parts[2] != SCHEME:
            raise UsersFileError(f"{where}: expected 'authid role {SCHEME} iterations keylen salt key'")
        authid, role, _, iterations, keylen, salt, key = parts
        if not (iterations.isdigit() and keylen.isdigit()):
            raise UsersFileError(f"{where}: iterations and keylen must be integers")
        try:
            base64.b64decode(key, validate=True)
        except ValueError:
            raise UsersFileError(f"{where}: the key is not base64") from None
        if authid in users:
            raise UsersFileError(f"{where}: authid {authid!r} appears twice")
        users[authid] = UserRecord(authid, role, int(iterations), int(keylen), salt, key.encode("ascii"))
    return UsersFile(users, decoy_secret)


def _parse_secret(where: str, text: str) -> bytes:
    try:
        secret = base64.b64decode(text, validate=True)
    except ValueError:
        raise UsersFileError(f"{where}: the decoy secret is not base64") from None
    if len(secret) < 16:
        raise UsersFileError(f"{where}: the decoy secret must be at least 16 bytes")
    return secret


def parse_users(text: str, source: str = "<users>") -> dict[str, UserRecord]:
    return parse_users_file(text, source).users


def read_users_file(path: str | Path) -> UsersFile:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise UsersFileError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UsersFileError(f"{path}: not UTF-8 text") from None
    return parse_users_file(text, str(path))


def read_users(path: str | Path) -> dict[str, UserRecord]:
    return read_users_file(path).users


def write_users(
    path: str | Path, users: dict[str, UserRecord], decoy_secret: bytes | None = None, group: str | None = None
) -> None:
    """Replace the file atomically: mode 0600, or 0640 with ``group`` (the service's, so it can read it).

    Without ``group`` an existing file keeps its group and its group-read bit, so a file
    made for a service (``--group zmqwamp``) stays readable by it after later edits;
    nobody else ever gets a bit.
    """
    path = Path(path)
    mode, gid = 0o600, None
    if group is not None:
        import grp

        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise UsersFileError(f"no group {group!r}") from None
        mode = 0o640
    elif path.exists():
        st = path.stat()
        mode, gid = 0o600 | (st.st_mode & 0o040), st.st_gid
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(HEADER)
            if decoy_secret is not None:
                f.write(f"{DECOY_SECRET} {base64.b64encode(decoy_secret).decode('ascii')}\n")
            for record in users.values():
                f.write(record.line())
        os.chmod(tmp, mode)
        if gid is not None and gid != os.stat(tmp).st_gid:
            try:
                os.chown(tmp, -1, gid)
            except PermissionError:
                raise UsersFileError(f"{path}: cannot give the file to group {group or gid} (run as root)") from None
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _in_thread(f, *args):
    from twisted.internet.threads import deferToThread

    return deferToThread(f, *args)


def changes(old: dict[str, UserRecord], new: dict[str, UserRecord]) -> list[IdentityChange]:
    """What a new version of the file takes away: users removed, roles changed, passwords changed.

    A user whose role changed is ended rather than re-checked: the role was in the WELCOME the client acts
    on, and it gets the new one by logging in again.
    """
    found = []
    for authid, record in old.items():
        now = new.get(authid)
        if now is None:
            found.append(IdentityChange(authid, "the user was removed from the users file"))
        elif now.role != record.role:
            found.append(IdentityChange(authid, "the user's role changed", f"{record.role} -> {now.role}"))
        elif now != record:
            found.append(IdentityChange(authid, "the user's password was reset"))
    return found


@implementer(ICredentialsChecker, IWampCraSalts, IIdentitySource)
class UsersFileChecker:
    """Cred checker over a users file, for ``ticket`` and (salted) ``wampcra``.

    ``run(f, *args)`` runs the key derivation and returns a Deferred; the default
    runs it in the reactor's thread pool, tests pass a synchronous one.

    The file is re-read when it changed (its mtime, inode or size), at a login and
    whenever the bridge asks (:meth:`refresh`: every second, and on SIGHUP); what the
    new version takes away from open sessions goes to the :meth:`watch` callbacks.
    """

    credentialInterfaces = (IUsernamePassword, IUsernameHashedPassword)
    authprovider = "zmqwamp-users"

    def __init__(self, path: str | Path, run=None) -> None:
        self.path = Path(path)
        self._run = run or _in_thread
        self._process_secret = os.urandom(DECOY_SECRET_BYTES)  # for a file without a decoy secret
        self._secret = self._process_secret
        self._warned = False
        self._stamp: tuple[int, int, int] | None = None  # (mtime, inode, size) of the version read
        self._bad_stamp: tuple[int, int, int] | None = None  # of a version that could not be used
        self._error: str | None = None  # the last error logged
        self._users: dict[str, UserRecord] = {}
        self._watchers: list[Callable[[list[IdentityChange]], None]] = []
        self._decoy_params: list[tuple[int, int]] = [(DEFAULT_ITERATIONS, DEFAULT_KEYLEN)]
        self._reload(strict=True)

    def _reload(self, strict: bool = False) -> None:
        try:
            try:
                st = self.path.stat()
            except OSError as e:
                raise UsersFileError(f"{self.path}: cannot read: {e.strerror}") from None
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
            if stamp in (self._stamp, self._bad_stamp):
                return
            self._bad_stamp = stamp  # until it is read
            users_file = read_users_file(self.path)
        except UsersFileError as e:
            if strict:
                raise
            if str(e) != self._error:  # once, not at every look (every second)
                self._error = str(e)
                log.error(
                    "users file {path} not reloaded, keeping the last good one: {error}",
                    path=str(self.path),
                    error=str(e),
                )
            return
        self._stamp, self._bad_stamp, self._error = stamp, None, None
        old, self._users = self._users, users_file.users
        # decoys take the parameters of real users, as often as those occur
        self._decoy_params = sorted((u.iterations, u.keylen) for u in self._users.values()) or [
            (DEFAULT_ITERATIONS, DEFAULT_KEYLEN)
        ]
        self._secret = users_file.decoy_secret or self._process_secret
        if users_file.decoy_secret is None and not self._warned:
            self._warned = True
            log.warn(
                "users file {path} has no decoy secret: an unknown authid gets a different wampcra salt in each "
                "bridge process, which tells a client comparing two of them (--workers, restarts, a load balancer) "
                "that it does not exist; add one with `python -m zmqwamp.users decoy-secret {path}`",
                path=str(self.path),
            )
        if strict:
            return
        found = changes(old, self._users)
        log.info(
            "users file {path} re-read: {n} user(s), {changed} removed or changed",
            path=str(self.path),
            n=len(self._users),
            changed=len(found),
        )
        if found:
            for watcher in list(self._watchers):
                watcher(found)

    # -- IIdentitySource ------------------------------------------------------------

    def identities(self) -> list[tuple[str, str]]:
        return [(record.authid, record.role) for record in self._users.values()]

    def refresh(self) -> None:
        self._reload()

    def watch(self, callback: Callable[[list[IdentityChange]], None]) -> None:
        self._watchers.append(callback)

    def _lookup(self, username: bytes) -> UserRecord | None:
        self._reload()
        return self._users.get(to_bytes(username).decode("utf-8", "replace"))

    def _decoy(self, username: bytes) -> UserRecord:
        """The same made-up record for ``username`` in every process that reads this file (its decoy secret)."""
        digest = hmac.new(self._secret, b"zmqwamp decoy\0" + to_bytes(username), hashlib.sha256).digest()
        salt = base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")  # the shape of make_record's
        iterations, keylen = self._decoy_params[int.from_bytes(digest[16:24], "big") % len(self._decoy_params)]
        key = base64.b64encode(hashlib.sha256(digest).digest())  # never equal to a derived key in practice
        return UserRecord("", "", iterations, keylen, salt, key)

    def wampcra_salt(self, username: bytes) -> Salt:
        record = self._lookup(username) or self._decoy(username)
        return Salt(record.salt, record.iterations, record.keylen)

    def requestAvatarId(self, credentials):
        record = self._lookup(credentials.username)
        known = record is not None
        if record is None:
            record = self._decoy(credentials.username)
        if IUsernamePassword.providedBy(credentials):
            d = self._run(derive_key, credentials.password, record.salt, record.iterations, record.keylen)
            d.addCallback(lambda key: constant_time_equal(key, record.key))
        else:
            d = maybeDeferred(credentials.checkPassword, record.key)

        def decide(matched: bool):
            # and the record is still the file's: one changed while its key was derived would leave a session
            # that the change (already announced) did not end
            if matched and known and self._users.get(record.authid) == record:
                return Identity(record.authid, record.role, self.authprovider)
            raise UnauthorizedLogin()

        return d.addCallback(decide)


def checker_from_argstring(argstring: str) -> UsersFileChecker:
    """``--auth zmqwamp-users:PATH``"""
    if not argstring.strip():
        raise UsersFileError("zmqwamp-users needs the path of a users file: --auth zmqwamp-users:PATH")
    return UsersFileChecker(argstring)


AUTH_HELP = """
A users file with salted PBKDF2-SHA256 keys (never passwords) and a role per
user, managed with `python -m zmqwamp.users add|remove|list PATH`.  Serves the
WAMP authmethods 'ticket' (the password is the ticket) and 'wampcra' (salted:
salt, iterations and keylen are sent in the CHALLENGE).  The file is re-read
when it changes.  Unknown authids get decoy salts derived from the file's
'# decoy-secret:' line, the same in every bridge process; the CLI writes it
(`python -m zmqwamp.users decoy-secret PATH` adds it to an older file).
"""
