"""Where the project's files are, for tests in any folder."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
