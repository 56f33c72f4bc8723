"""Atomic file writing: every file the project writes (datasets, embeddings, caches, results) goes
through :func:`atomic_open`, so an interrupted run never leaves a half-written file behind."""
import contextlib
import hashlib
import os
import tempfile

import numpy as np


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


def atomic_save_npy(path, array):
    with atomic_open(path) as f:
        np.save(f, array)


def file_digest(path, algorithm="sha256"):
    """Hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir(kind):
    """``$RECBOLE_PSRQ_CACHE/<kind>`` if set, else ``./cache/<kind>`` (git-ignored at the repo root)."""
    root = os.environ.get("RECBOLE_PSRQ_CACHE") or os.path.join(os.getcwd(), "cache")
    return os.path.join(root, kind)
