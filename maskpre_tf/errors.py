"""User-facing errors and the command-line wrapper that turns them into exit code 2.

Every problem a user can fix (a missing directory, an unparsable file name, a corrupt image, an
empty query set) is raised as :class:`UserError` with a message naming the path, what was
expected and how to fix it. :func:`run_main` prints that message without a traceback and exits
with status 2; ``--debug`` (or ``MASKPRE_DEBUG=1``) shows the traceback too. Programs start with
:func:`run_app`, which reports a command line absl cannot parse (an unknown flag, a bad value, a
missing ``--flagfile``) the same way.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from maskpre_tf.cli_help import ProgramHelp


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
    except Exception as err:  # noqa: BLE001 - only user errors and storage failures are caught
        message = str(err) if isinstance(err, UserError) else storage_problem(err)
        if message is None:
            raise
        if debug or os.environ.get("MASKPRE_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


_NO_FLAGFILE = re.compile(r"Unable to open flagfile: \[Errno \d+\] ([^:]+): '(.*)'")


def flag_error_message(err: Exception) -> str:
    """The one-line report of a command line absl could not parse (``flags.Error``).

    A missing ``--flagfile`` names the file and where relative paths are read from; any other
    problem (unknown flag, a value of the wrong type) is absl's text on one line.
    """
    text = " ".join(str(err).split())
    missing = _NO_FLAGFILE.search(text)
    if missing:
        reason, path = missing.groups()
        return (
            f"--flagfile={path}: {reason.lower()} (relative paths are read from {os.getcwd()}); "
            "check the path (the shipped flagfiles are configs/*.flags)"
        )
    return f"{text.removeprefix('ERROR:: ')}; see --help for this program's flags"


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl's flag parsing, a bad command line reported like a user error: one line, exit 2.

    The ``flags_parser`` of :func:`run_app` (absl's own prints a "FATAL" block, exits 1).
    """
    from absl import flags

    try:
        return flags.FLAGS(list(argv))
    except flags.Error as err:
        print(f"error: {flag_error_message(err)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def run_app(main: Callable[[list[str]], None], program_help: ProgramHelp | None = None) -> None:
    """Run a program: absl parses the flags (:func:`parse_flags`), then :func:`run_main`.

    Every way the user can get the command wrong (a bad flag or flagfile, a :class:`UserError`,
    a full disk) ends in one ``error:`` line and exit status 2; ``--debug`` (a flag the program
    defines) shows the traceback of a user error too. ``program_help`` is what ``--help``
    prints (:func:`maskpre_tf.cli_help.install`), once absl has defined its own flags.
    """
    from absl import app, flags

    def parse(argv: Sequence[str]) -> list[str]:
        if program_help is not None:
            from maskpre_tf.cli_help import install

            install(program_help)
        return parse_flags(argv)

    app.run(lambda argv: run_main(main, argv, debug=flags.FLAGS.debug), flags_parser=parse)


# What the OS says when a write fails for lack of room or rights, as errno and as TF's text.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES}
_STORAGE_TEXTS = (
    "No space left on device",
    "File too large",
    "Disk quota exceeded",
    "Read-only file system",
    "Permission denied",
)


def storage_problem(err: BaseException) -> str | None:
    """The one-line report of a failed write (full disk, file-size limit, read-only or
    forbidden folder), or None when ``err`` is something else.

    Works for Python's ``OSError`` and for TensorFlow's errors, whose text carries the OS
    reason and the path (e.g. a checkpoint's ``SaveV2`` on a full disk).
    """
    if isinstance(err, OSError) and err.errno in _STORAGE_ERRNOS:
        reason, path = os.strerror(err.errno), err.filename
    else:
        text = str(err)
        reason = next((t for t in _STORAGE_TEXTS if t in text), None)
        if reason is None or type(err).__module__.split(".")[0] != "tensorflow":
            return None
        found = re.search(r"(/[^\s;:]+)", re.sub(r"\{\{.*?\}\}", "", text))  # not the op
        path = re.sub(r"_temp/.*$", "", found.group(1)) if found else None  # TF's staging
    where = f"could not write {path}" if path else "a write failed"
    return (
        f"{where}: {reason}. Free space (or fix the folder's permissions, or choose another "
        "output folder) and re-run the same command: what was already written is kept"
    )


def quiet_library_logs() -> None:
    """Log only warnings and errors through absl unless ``--verbosity`` was given.

    Library INFO logs (SavedModel writing, checkpoint sharding, faiss loading) would drown a
    program's own output. Call at the start of a program's ``main``.
    """
    from absl import flags
    from absl import logging as absl_logging

    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
