"""User-facing errors and the command-line wrapper that turns them into exit code 2.

Every problem a user can fix (a missing directory, an unparsable file name, a corrupt image, an
empty query set) is raised as :class:`UserError` with a message naming the path, what was
expected and how to fix it. :func:`run_main` prints that message without a traceback and exits
with status 2; ``--debug`` (or ``MASKPRE_DEBUG=1``) shows the traceback too.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence


class UserError(Exception):
    """A problem with the user's input or set-up, with a message that says how to fix it."""


EXIT_USER_ERROR = 2


def run_main(
    main: Callable[[list[str]], None], argv: Sequence[str] | None = None, debug: bool = False
) -> None:
    """Run an absl-style ``main(argv)``; report a :class:`UserError` cleanly and exit 2.

    Args:
      main: the program's main function.
      argv: the command line left after flag parsing (defaults to ``sys.argv``).
      debug: also print the traceback (``--debug``); ``MASKPRE_DEBUG=1`` does the same.
    """
    argv = list(sys.argv if argv is None else argv)
    try:
        main(argv)
    except UserError as err:
        if debug or os.environ.get("MASKPRE_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def quiet_library_logs() -> None:
    """Log only warnings and errors through absl unless ``--verbosity`` was given.

    Library INFO logs (SavedModel writing, checkpoint sharding, faiss loading) would drown a
    program's own output. Call at the start of a program's ``main``.
    """
    from absl import flags
    from absl import logging as absl_logging

    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
