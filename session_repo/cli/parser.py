"""The ``session-repo`` argument parser and its help text.

Each command's help is its function's docstring: a summary, a blank line, then
examples. ``--url`` is accepted before and after the command. A rejected command
line is one line that never echoes the stray words (one may be a session id).
"""

from __future__ import annotations

import argparse
import inspect
import textwrap
from typing import NoReturn

from session_repo._version import __version__
from session_repo.cli.commands import COMMANDS

__all__ = ["ENVIRONMENT", "UsageError", "build_parser"]

ENVIRONMENT = """\
environment (the library's own settings):
  SESSION_STORE_URL     store URL (default sqlite+aiosqlite:///session-store.sqlite);
                        also postgresql+asyncpg://, mysql+asyncmy://, redis://, memory://
  SESSION_STORE_ENABLED false turns the store off; SESSION_STORE_TTL_MS default ttl; ...
A SQLite store is created (owner-only) and migrated on first use, even by
get, stats or health; a server database must be migrated with `migrate`.
A session id of "-" is read from stdin (keeps it out of `ps` and shell history).
"""


class UsageError(Exception):
    """A command line the parser rejected; the message is one line, safe to show."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports one line and never echoes stray arguments."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            message = "unrecognized arguments, not shown as they may hold a session id"
        elif "invalid choice:" in message:  # the word may be a session id given as a command
            head, _, choices = message.partition(" (choose from ")
            message = f"{head.split('invalid choice:')[0]}unknown command (choose from {choices}"
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command, with its options and help.

    Returns:
        The ``session-repo`` parser; each command sets ``run``, its coroutine function
        (given the parsed arguments, it returns the exit status).
    """
    common = _Parser(add_help=False)
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="store URL; overrides SESSION_STORE_URL (and SESSION_STORE_PATH)",
    )
    parser = _Parser(
        prog="session-repo",
        description="Which server instance owns which session: manage the session store.",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"session-repo {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND", required=True)
    sub: dict[str, argparse.ArgumentParser] = {}
    for run in COMMANDS:
        summary, _, examples = inspect.cleandoc(run.__doc__ or "").partition("\n\n")
        name = run.__name__.strip("_")
        sub[name] = commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=f"examples:\n{textwrap.indent(examples, '  ')}\n\n{ENVIRONMENT}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
        )
        sub[name].set_defaults(run=run)
    for name in ("get", "set", "delete", "lease"):
        sub[name].add_argument("session_id", metavar="SID", help='session id; "-" reads stdin')
    sub["set"].add_argument("alloc_id", metavar="ALLOC", help="the owner: machine or instance id")
    sub["set"].add_argument("--ttl", type=float, metavar="SECONDS", help="default: from settings")
    sub["migrate"].add_argument("--sql", action="store_true", help="print the SQL, run nothing")
    for name in ("current", "get", "lease", "owners", "cleanup", "stats", "health", "doctor"):
        sub[name].add_argument("--json", action="store_true", help="print the answer as JSON")
    sub["demo"].add_argument("--dir", help="where to create demo.sqlite (default: a temp dir)")
    bench = sub["bench"]
    bench.add_argument("--sessions", type=int, default=10_000, help="bindings to preload")
    bench.add_argument("--ops", type=int, default=2_000, help="operations per measurement")
    bench.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 64], metavar="N",
        help="concurrent tasks; one measurement each (default: 1 64)",
    )  # fmt: skip
    return parser
