"""``python -m zmqwamp.users``: add, remove and list the users of a users file (:mod:`zmqwamp.auth.users`).

Usage::

    python -m zmqwamp.users add PATH AUTHID [--role ROLE] [--iterations N] [--password-stdin] [--group GROUP]
    python -m zmqwamp.users remove PATH AUTHID
    python -m zmqwamp.users list PATH
    python -m zmqwamp.users decoy-secret PATH   # add the secret to a file that has none
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zmqwamp.auth.cred import (
    DEFAULT_ROLE,
)
from zmqwamp.auth.users import (
    DEFAULT_ITERATIONS,
    DEFAULT_KEYLEN,
    UsersFile,
    UsersFileError,
    check_name,
    make_record,
    new_decoy_secret,
    read_users,
    read_users_file,
    write_users,
)


def _read_password(args) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise UsersFileError("no terminal to ask for the password: pipe it in with --password-stdin")
        import getpass

        password = getpass.getpass(f"password for {args.authid}: ")
        if getpass.getpass("again: ") != password:
            raise UsersFileError("the passwords differ")
    return password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zmqwamp.users", description="Manage a zmqwamp users file.")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add a user, or set a user's password and role")
    add.add_argument("path")
    add.add_argument("authid")
    add.add_argument("--role", default=DEFAULT_ROLE, help=f"WAMP authrole [default: {DEFAULT_ROLE}]")
    add.add_argument(
        "--iterations", type=int, default=DEFAULT_ITERATIONS, help=f"PBKDF2 iterations [default: {DEFAULT_ITERATIONS}]"
    )
    add.add_argument(
        "--keylen", type=int, default=DEFAULT_KEYLEN, help=f"derived key length in bytes [default: {DEFAULT_KEYLEN}]"
    )
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    add.add_argument(
        "--group",
        help="give the file to this group, mode 0640, for the service that reads it "
        "[default: a new file is 0600; an existing one keeps its group and mode]",
    )
    remove = sub.add_parser("remove", help="remove a user")
    remove.add_argument("path")
    remove.add_argument("authid")
    listing = sub.add_parser("list", help="list authids and roles")
    listing.add_argument("path")
    decoy = sub.add_parser(
        "decoy-secret", help="add the secret unknown authids' decoy salts derive from, if the file has none"
    )
    decoy.add_argument("path")
    args = parser.parse_args(argv)
    try:
        path = Path(args.path)
        if args.command == "list":
            for record in read_users(path).values():
                print(f"{record.authid}\t{record.role}")
            return 0
        users_file = read_users_file(path) if path.exists() else UsersFile({})
        users = dict(users_file.users)
        # every write keeps the file's decoy secret, or creates one
        decoy_secret = users_file.decoy_secret or new_decoy_secret()
        if args.command == "add":
            check_name("authid", args.authid)
            record = make_record(args.authid, _read_password(args), args.role, args.iterations, args.keylen)
            verb = "updated" if args.authid in users else "added"
            users[args.authid] = record
            write_users(path, users, decoy_secret, args.group)
            print(f"{verb} {args.authid} (role {args.role}) in {path}")
        elif args.command == "decoy-secret":
            if users_file.decoy_secret is not None:
                print(f"{path} already has a decoy secret")
            else:
                write_users(path, users, decoy_secret)
                print(f"added a decoy secret to {path} ({len(users)} user(s) unchanged)")
        else:
            if users.pop(args.authid, None) is None:
                raise UsersFileError(f"{path}: no user {args.authid!r}")
            write_users(path, users, decoy_secret)
            print(f"removed {args.authid} from {path}")
    except UsersFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
