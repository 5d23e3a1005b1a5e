"""The ``session-repo`` command line.

``entry`` (``main``: exit statuses), ``parser`` (arguments and help), ``commands``
(one coroutine per command; ``owners`` and ``lease`` in ``leases``), ``store`` (the
store a command works on), ``output`` (what is shown), and the larger commands
``doctor``, ``demo`` and ``bench``.
"""

from session_repo.cli.entry import main

__all__ = ["main"]
