"""``main``: parse, run one command, turn what happened into an exit status.

An error is one line on stderr and exit status 2 (3 for a bug); never a traceback.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from session_repo.cli.commands import Command
from session_repo.cli.output import EXIT_BUG, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_MISSING, fail
from session_repo.cli.parser import UsageError, build_parser
from session_repo.errors import SessionRepoError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command, as the ``session-repo`` entry point does.

    Args:
        argv: the arguments after the program name (``sys.argv[1:]`` when None).

    Returns:
        The exit status: 0 done, 1 nothing found (or degraded, or warnings), 2 an error
        (or down, or failures), 3 a bug, 130 interrupted. An error is one line on
        stderr, never a traceback.
    """
    try:
        args = build_parser().parse_args(argv)
        command: Command = args.run
        return asyncio.run(command(args))
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `session-repo migrate --sql | head`: the reader left
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        return EXIT_MISSING
    except (UsageError, SessionRepoError, ValueError, TypeError, OSError) as exc:
        return fail(str(exc) or type(exc).__name__, EXIT_ERROR)
    except Exception as exc:  # a bug or an unclassified driver error: still no traceback
        return fail(f"unexpected {type(exc).__name__}: {exc}", EXIT_BUG)
