"""``python -m session_repo``: the ``session-repo`` command."""

import sys

from session_repo.cli import main

if __name__ == "__main__":
    sys.exit(main())
