"""The ``session-repo`` command line: parser and commands, doctor, demo, bench."""

from session_repo.cli.commands import main

__all__ = ["main"]
