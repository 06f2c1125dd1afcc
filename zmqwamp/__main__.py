"""``python -m zmqwamp`` / ``zmqwamp``: the same as ``twistd -n zmqwamp``."""

import sys


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--version"]:
        from zmqwamp import __version__

        print(f"zmqwamp {__version__}")
        return
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", "--nodaemon", "--pidfile=", "zmqwamp", *argv]
    run()


if __name__ == "__main__":
    main()
