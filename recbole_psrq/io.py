"""Atomic file writing: every file the project writes (datasets, embeddings, caches, results) goes
through :func:`atomic_open`, so an interrupted run never leaves a half-written file behind."""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_open(path, mode="wb", **kwargs):
    """Open a temporary file next to ``path``; on success it replaces ``path`` (mode 0644)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are data files, not secrets
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
