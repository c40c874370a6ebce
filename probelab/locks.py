"""Advisory file locks (``fcntl.flock``) that serialise probelab processes writing the same place.

The lock belongs to an open file descriptor, so the kernel releases it when the process dies
(SIGKILL included): a lock can never be left stale. A folder can be locked without creating any
file in it (``flock`` on the folder's own descriptor), which keeps output folders free of lock
litter. Where ``fcntl`` is missing (Windows) the lock is a no-op.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> with file_lock(d, timeout=1):
...     pass
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Iterator

from .errors import ProbelabError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None


class LockTimeout(ProbelabError):
    """Another process held the lock for longer than the timeout."""


def default_timeout() -> float:
    """Seconds a writer waits for another one: ``$PROBELAB_LOCK_TIMEOUT`` or 600."""
    try:
        value = float(os.environ.get("PROBELAB_LOCK_TIMEOUT", "600"))
    except ValueError:
        return 600.0
    return value if math.isfinite(value) and value >= 0 else 600.0  # nan would wait forever


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, timeout: float | None = None, what: str | None = None,
              poll: float = 0.02) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a folder, or a lock file created on demand).

    Waits up to ``timeout`` seconds (default :func:`default_timeout`) while another process holds
    it, then raises :class:`LockTimeout` naming ``what`` (default: the path). Not re-entrant: a
    process that takes the same lock twice waits for itself.
    """
    path = Path(path)
    timeout = default_timeout() if timeout is None else timeout
    if fcntl is None:  # pragma: no cover
        yield
        return
    if path.is_dir():
        fd = os.open(path, os.O_RDONLY)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"{what or path} is busy: another probelab process is writing it "
                                      f"(waited {timeout:g} s; PROBELAB_LOCK_TIMEOUT sets the wait)") from None
                time.sleep(poll)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
