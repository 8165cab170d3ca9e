"""One process per run folder: a lock the training process holds while it writes the run.

The lock is ``<run_dir>/.lock``, held with ``fcntl.flock`` for the life of the process and
holding the owner's pid, host and start time. The kernel releases a ``flock`` when its process
ends in any way (exit, exception, SIGKILL, OOM kill), so a lock file left by a dead process is
recognised as stale and taken over, with a note; a live holder makes a second process stop at
once with one line naming it. Under multi-worker training only the chief takes it.

``flock`` works between processes of one machine and on local file systems; on network file
systems that do not support it, the holder's record still names who wrote last.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from collections.abc import Callable

from maskpre_tf.errors import UserError

LOCK_FILE = ".lock"


class RunLock:
    """The lock of one run folder: ``with RunLock(run_dir): ...`` or :meth:`acquire` /
    :meth:`release` (also released by the kernel when the process dies).

    Args:
      run_dir: the run's folder (created if missing: the lock is the first file written).
      log: where the note about a stale lock goes.
    """

    def __init__(self, run_dir: str, log: Callable[[str], None] = print):
        self.path = os.path.join(run_dir, LOCK_FILE)
        self.run_dir = run_dir
        self.log = log
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock; note a stale holder; refuse while another live process holds it.

        Raises:
          UserError: another process holds the lock (named by pid, host and start time).
        """
        os.makedirs(self.run_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            error = _held(self.run_dir, fd)
            os.close(fd)
            raise error from None
        earlier = _read(fd)
        if earlier:
            self.log(f"note: took over the lock of {self.run_dir} from {_describe(earlier)}, gone")
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Clear the holder record and release the lock (once; later calls do nothing).

        The (empty) file stays: removing it could let two later processes lock two files.
        """
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def refuse_if_held(run_dir: str) -> None:
    """Stop at once if a live process holds ``run_dir``'s lock; write nothing.

    A probe for programs to call before their slow start-up (TensorFlow's import): it takes and
    drops a shared ``flock``, which fails only while a holder has the exclusive one. A missing
    folder or lock file passes. The lock itself is still taken later, by :class:`RunLock`.

    Raises:
      UserError: as :meth:`RunLock.acquire`, naming the holder.
    """
    try:
        fd = os.open(os.path.join(run_dir, LOCK_FILE), os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        raise _held(run_dir, fd) from None
    finally:
        os.close(fd)


def _held(run_dir: str, fd: int) -> UserError:
    """The one-line error for a run folder whose lock (open as ``fd``) another process holds."""
    return UserError(
        f"{run_dir} is being trained by another process ({_describe(_read(fd))}); wait for it "
        "to finish or stop it, or pass another --run_dir"
    )


def _read(fd: int) -> dict:
    """The holder record in an open lock file ({} when empty or unreadable)."""
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError, UnicodeDecodeError):
        return {}


def _describe(record: dict) -> str:
    """'pid 123 on host since 2026-...' of a holder record."""
    if not record:
        return "a process that left no record"
    return (
        f"pid {record.get('pid', '?')} on {record.get('host', '?')} since "
        f"{record.get('started', '?')}"
    )
