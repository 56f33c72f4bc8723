"""One benchmark process per ``--out`` folder.

Two drivers in one folder would start the same runs and tuning trials in the same work folders (resume
states, checkpoints) and append to the same log and report. The driver holds an exclusive ``flock`` on
``<out>/.benchmark.lock`` while it runs; a second one is refused with the holder's pid and command. The
kernel drops the lock when the holder's file is closed or its process dies, so a killed driver never leaves
a stale lock behind (the file's text is only there to name the holder).
"""
import contextlib
import datetime
import fcntl
import os

from recbole_psrq.benchmark.runner import shown_path
from recbole_psrq.errors import PSRQError

LOCK_NAME = ".benchmark.lock"


class OutFolderBusy(PSRQError):
    """Another benchmark process holds the ``--out`` folder."""


@contextlib.contextmanager
def hold_out_folder(out, command):
    """Hold ``out`` for this process while the block runs; :class:`OutFolderBusy` if another holds it."""
    fd = os.open(os.path.join(out, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "it has not named itself yet"
            raise OutFolderBusy(
                f"{shown_path(out)} is in use by another benchmark process ({holder}). Two processes in one "
                "--out folder would start the same runs and trials in the same work folders; wait for it to "
                "finish, or give this one another --out.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, since {datetime.datetime.now():%Y-%m-%d %H:%M:%S}: {command}".encode(), 0)
        yield
    finally:
        os.close(fd)
