"""Writing files so that an interrupted run never leaves a broken one."""
from __future__ import annotations

import os
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Union

__all__ = ["RunInterrupted", "atomic_write", "check_output_dir", "sigterm_interrupts"]


def atomic_write(path: Union[str, Path], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it to ``path``.

    The rename is atomic on POSIX and Windows: readers see the old file or the
    complete new one, never a partial one; on any exception (including
    KeyboardInterrupt) the temporary file is removed. The file gets the usual
    permissions (0666 minus the umask), not mkstemp's 0600.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_output_dir(path: Union[str, Path]) -> Path:
    """Check, before any work, that ``path`` is a folder files can be written in, or can be created.

    Nothing is created: an existing folder gets a probe file (removed at
    once); for a new one, the nearest existing parent must be a writable
    folder.

    Raises:
        ValueError: ``path`` is an existing file, cannot be created, or is not
            writable; one line naming it and why.
    """
    path = Path(path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path} exists and is not a folder")
        try:
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as err:
            raise ValueError(f"{path} is not writable ({err.strerror or type(err).__name__})") from None
        return path
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{path} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{path} cannot be created: {parent} is not writable")
    return path


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run over many images, with how far it got.

    Attributes:
        done: images finished (written, or already there) before the interrupt.
        total: images the run had to do.
    """

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"interrupted after {done} of {total} images")
        self.done, self.total = done, total


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM (``kill``, a batch scheduler's time limit) interrupts the main thread as
    Ctrl-C does: ``KeyboardInterrupt``, so temporary files are removed and worker processes stopped.
    The handler before is restored after; outside the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
