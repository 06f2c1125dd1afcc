"""Twisted's server endpoint descriptions (``tcp:8080:interface=127.0.0.1``), split into their fields.

For what reads a ``listen`` description without listening on it: the health check (where to connect) and
``--workers`` (which port to share).  The syntax is Twisted's, documented with ``serverFromString``: fields
separated by ``:``, a field with ``=`` is a keyword (``key=value``), and ``\\`` takes the next character as it
is (``interface=\\:\\:1``).  Twisted's parser of it is private (``twisted.internet.endpoints._parse``): used
when this Twisted has it (:mod:`zmqwamp.internals`), else the same rules here.
"""

from __future__ import annotations

from collections.abc import Callable

from zmqwamp.internals import private_name

TWISTED_PARSER = ("twisted.internet.endpoints", "_parse")  # Twisted's parser of the syntax, private

Parse = Callable[[str], tuple[list[str], dict[str, str]]]


def split(description: str) -> tuple[list[str], dict[str, str]]:
    """Twisted's rules: ``(positional fields, keyword fields)``, the kind (``tcp``) the first positional one."""
    args: list[str] = []
    kwargs: dict[str, str] = {}
    field = [""]  # the current field: [value], or [key, value] after its first unescaped "="
    chars = iter(description)
    for char in chars:
        if char == ":":
            _add(field, args, kwargs)
            field = [""]
        elif char == "=" and len(field) == 1:
            field.append("")
        elif char == "\\":
            field[-1] += next(chars, "")
        else:
            field[-1] += char
    _add(field, args, kwargs)
    return args, kwargs


def _add(field: list[str], args: list[str], kwargs: dict[str, str]) -> None:
    if len(field) == 1:
        args.append(field[0])
    else:
        kwargs[field[0]] = field[1]


def parser() -> Parse:
    """Twisted's own parser if this Twisted has it, else :func:`split`."""
    parse = private_name(*TWISTED_PARSER, "endpoint descriptions are split by zmqwamp's copy of its rules")
    return parse if parse is not None else split


_parse = parser()


def description_fields(description: str) -> tuple[str, list[str], dict[str, str]]:
    """``(kind, positional fields after it, keyword fields)``: ``tcp:8080:interface=\\:\\:1`` gives
    ``("tcp", ["8080"], {"interface": "::1"})``.  A ``haproxy:`` prefix is the caller's to take off."""
    args, kwargs = _parse(description)
    return (args[0].lower() if args else ""), args[1:], kwargs
