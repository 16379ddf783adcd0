"""One writer per output: an exclusive ``fcntl.flock`` on a lock file, held for a whole build or run.

The lock lives in the kernel, so it is released when the holder exits or is killed (no stale
locks), and it does not depend on HDF5's own file locking (often off on network file systems).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class LockedError(OSError):
    """Another process holds the lock: a build or training run is writing the same output."""


@contextmanager
def exclusive_lock(lock_file: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (created if needed) until the block ends.

    ``LockedError`` at once, naming ``what``, if another process holds it. The file is removed
    on exit while still locked; a waiter that locked the removed file notices and retries.
    """
    lock_file = Path(lock_file)
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_lock(fd):
            os.close(fd)
            raise LockedError(
                f"another process is writing {what} (it holds {lock_file}); wait for it to finish, "
                "or choose another output"
            )
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_file).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # we locked a file its previous holder had just removed: start over
    try:
        yield
    finally:
        try:
            lock_file.unlink()
        except OSError:  # already gone, or a read-only file system: the lock dies with the fd anyway
            pass
        os.close(fd)


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting; ``False`` if another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
