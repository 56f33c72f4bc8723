"""What every quantizer shares: input checks, L2-normalisation, chunked encoding, option handling
and the single-file save format.

A quantizer maps an (N, d) float matrix to semantic IDs, an int64 (N, L) matrix with values in
[0, codebook_size). ``decode`` maps codes back to a float32 (N, d) reconstruction of the *normalised*
input (the space the codebooks live in), so reconstruction error is comparable across quantizers.

Save format: one ``.npz`` file. ``config`` holds a JSON string (quantizer name, constructor
arguments, fitted input dimension); the other entries are the fitted arrays of the subclass.
Written to a temporary file in the target directory and moved into place with ``os.replace`` so a
crash never leaves a half-written quantizer behind.
"""
import json
import logging
import sys
import time
from contextlib import contextmanager

import faiss
import numpy as np

from recbole_psrq.errors import ConfigError, DataFormatError
from recbole_psrq.io import atomic_open
from recbole_psrq.quantization.kmeans import train_kmeans

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


class Quantizer:
    """Base class. Subclasses set ``name``, ``DEFAULT_LEVELS``, ``OPTIONS`` (option -> default) and
    implement ``_fit(x)``, ``_encode_chunk(x)``, ``_decode(codes)``, ``_state()`` and
    ``_load_state(arrays)``."""

    name = None
    DEFAULT_LEVELS = 3
    # chunk_size: rows encoded at a time. Small chunks keep the working set to a few tens of MB, and
    # buffers that size are recycled by malloc, while 65536-row chunks were measured ~20% slower
    # from page-faulting fresh hundreds-of-MB buffers on every chunk and level.
    COMMON_OPTIONS = {"normalize": True, "chunk_size": 8192, "threads": 1}
    OPTIONS = {}

    def __init__(self, n_levels=None, codebook_size=256, seed=0, **options):
        self.n_levels = self.DEFAULT_LEVELS if n_levels is None else n_levels
        self.codebook_size = codebook_size
        self.seed = seed
        allowed = self.allowed_options()
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ConfigError(
                f"Unknown option(s) {unknown} for quantizer '{self.name}'. "
                f"Allowed options and their defaults: {allowed}."
            )
        self.options = {**allowed, **options}
        self._check_int("n_levels", self.n_levels, minimum=1)
        self._check_int("codebook_size", self.codebook_size, minimum=2)
        self._check_int("seed", self.seed, minimum=0)
        self._check_int("chunk_size", self.options["chunk_size"], minimum=1)
        if self.options["threads"] is not None:
            self._check_int("threads", self.options["threads"], minimum=1)
        self._validate_options()
        self.dim = None

    @classmethod
    def allowed_options(cls):
        """Every option this quantizer accepts, with its default."""
        return {**cls.COMMON_OPTIONS, **cls.OPTIONS}

    def _validate_options(self):
        """Hook for subclass-specific option checks (raise ConfigError)."""

    def _check_int(self, label, value, minimum):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ConfigError(
                f"Quantizer '{self.name}': {label} must be an integer >= {minimum}, got {value!r}."
            )

    @property
    def config(self):
        return {
            "quantizer": self.name,
            "n_levels": int(self.n_levels),
            "codebook_size": int(self.codebook_size),
            "seed": int(self.seed),
            "options": dict(self.options),
        }

    @property
    def is_fitted(self):
        return self.dim is not None

    # ------------------------------------------------------------------ public API
    def fit(self, X):
        """Learn the codebooks from ``X`` (N, d). Returns ``self``."""
        X = check_matrix(X, "fit")
        if X.shape[0] < self.codebook_size:
            raise DataFormatError(
                f"Cannot fit quantizer '{self.name}': only N={X.shape[0]} items but "
                f"codebook_size k={self.codebook_size}, and k-means needs N >= k. Use a smaller "
                f"codebook_size (at most {X.shape[0]}, in practice N/30 or less) or more items."
            )
        self.dim = int(X.shape[1])
        with limit_threads(self.options["threads"]):
            self._fit(X)
        return self

    def encode(self, X):
        """Semantic IDs of ``X``: int64 (N, n_levels). Rows are processed ``chunk_size`` at a time
        so memory beyond ``X`` itself stays O(chunk_size * d)."""
        self._require_fitted("encode")
        X = check_matrix(X, "encode")
        if X.shape[1] != self.dim:
            raise DataFormatError(
                f"encode got embeddings of dimension {X.shape[1]}, but quantizer '{self.name}' was "
                f"fitted on dimension {self.dim}. Encode the same embedding type (modality / model) "
                "that the quantizer was fitted on, or fit a new quantizer."
            )
        codes = np.empty((X.shape[0], self.n_levels), dtype=np.int64)
        step = self.options["chunk_size"]
        with limit_threads(self.options["threads"]):
            for start in range(0, X.shape[0], step):
                chunk = self.preprocess(X[start:start + step])
                codes[start:start + step] = self._encode_chunk(chunk)
        return codes

    def decode(self, codes, n_levels=None):
        """float32 (N, d) reconstruction of the normalised input from ``codes``. With ``n_levels``
        only the first ``n_levels`` levels are used (coarse-to-fine reconstruction)."""
        self._require_fitted("decode")
        codes = np.asarray(codes)
        if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
            raise DataFormatError(
                f"decode expects an integer code matrix (N, levels), got dtype {codes.dtype} with "
                f"shape {codes.shape}."
            )
        used = codes.shape[1] if n_levels is None else n_levels
        self._check_int("n_levels (decode)", used, minimum=1)
        if used > min(codes.shape[1], self.n_levels):
            raise DataFormatError(
                f"decode asked for {used} levels, but the codes have {codes.shape[1]} and quantizer "
                f"'{self.name}' has {self.n_levels}."
            )
        codes = codes[:, :used].astype(np.int64)
        if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise DataFormatError(
                f"decode got codes outside [0, {self.codebook_size}) (min {codes.min()}, max "
                f"{codes.max()}); they were not produced by this quantizer."
            )
        with limit_threads(self.options["threads"]):
            return np.ascontiguousarray(self._decode(codes), dtype=np.float32)

    def preprocess(self, X):
        """float32 copy of ``X`` in the space the codebooks live in (L2-normalised rows by default).
        Zero rows stay zero."""
        x = np.array(X, dtype=np.float32, copy=True)
        if self.options["normalize"]:
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            np.divide(x, norms, out=x, where=norms > 0)
        return x

    def save(self, path):
        """Write the fitted quantizer to one ``.npz`` file, atomically."""
        self._require_fitted("save")
        config = {**self.config, "dim": self.dim, "format_version": FORMAT_VERSION}
        arrays = self._state()
        with atomic_open(path) as f:
            np.savez(f, config=np.array(json.dumps(config)), **arrays)

    def restore(self, dim, arrays):
        """Install fitted state read back from a saved file (used by ``load_quantizer``)."""
        self.dim = int(dim)
        self._load_state(arrays)

    # ------------------------------------------------------------------ subclass hooks
    def _fit(self, x):
        raise NotImplementedError

    def _encode_chunk(self, x):
        raise NotImplementedError

    def _decode(self, codes):
        raise NotImplementedError

    def _state(self):
        raise NotImplementedError

    def _load_state(self, arrays):
        raise NotImplementedError

    def _require_fitted(self, action):
        if not self.is_fitted:
            raise ConfigError(
                f"Cannot {action}: quantizer '{self.name}' is not fitted yet. Call fit(X) first or "
                "load a saved quantizer with load_quantizer(path)."
            )

    def _training_sample(self, X, max_points):
        """Normalised rows used to train the codebooks: all rows when N <= ``max_points``, otherwise
        a seeded uniform sample (sorted, so reading a memory-mapped ``X`` stays sequential)."""
        n = X.shape[0]
        if n <= max_points:
            return self.preprocess(X)
        rows = np.sort(np.random.default_rng(self.seed).choice(n, size=max_points, replace=False))
        return self.preprocess(X[rows])


@contextmanager
def limit_threads(threads):
    """Run faiss (and torch, when already imported) on ``threads`` CPU threads, restoring the
    previous setting afterwards; ``None`` keeps the libraries' defaults (all cores).

    Why the quantizers default to 1: results are then deterministic by construction, and on a
    shared or oversubscribed machine OpenMP spin-waiting made 2-thread faiss k-means 3.6x slower than
    1 thread (50k x 256, k=256, measured on this project's 2-core dev box). Set ``threads`` to the
    core count on a dedicated machine."""
    if threads is None:
        yield
        return
    torch = sys.modules.get("torch")
    previous_faiss = faiss.omp_get_max_threads()
    previous_torch = torch.get_num_threads() if torch else None
    faiss.omp_set_num_threads(threads)
    if torch:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous_faiss)
        if torch:
            torch.set_num_threads(previous_torch)


def check_matrix(X, action):
    """Return ``X`` as a 2-D numeric array (no copy when it already is one), rejecting non-finite
    rows with their indices."""
    try:
        X = np.asarray(X)
    except (TypeError, ValueError) as e:
        raise DataFormatError(f"{action}: embeddings are not a numeric matrix ({e}).") from e
    if X.ndim != 2:
        raise DataFormatError(
            f"{action}: embeddings must be a 2-D matrix (items x dimensions), got an array with "
            f"shape {X.shape}. Reshape it to (N, d), one row per item."
        )
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise DataFormatError(
            f"{action}: embeddings must be numeric, got dtype {X.dtype}."
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataFormatError(f"{action}: embeddings are empty (shape {X.shape}).")
    bad = nonfinite_rows(X)
    if bad.size:
        raise DataFormatError(
            f"{action}: {bad.size} embedding row(s) contain NaN or inf, e.g. rows "
            f"{bad[:10].tolist()}. Drop those items or impute their embeddings (e.g. with the "
            "modality mean) before quantising."
        )
    return X


def nonfinite_rows(X, chunk_size=65536):
    """Indices of rows of ``X`` holding NaN or inf, checked in chunks (no N x d boolean copy)."""
    if np.issubdtype(X.dtype, np.integer):
        return np.empty(0, dtype=np.int64)
    found = [
        start + np.flatnonzero(~np.isfinite(X[start:start + chunk_size]).all(axis=1))
        for start in range(0, X.shape[0], chunk_size)
    ]
    return np.concatenate(found).astype(np.int64)


class KMeansQuantizer(Quantizer):
    """Quantizers whose codebooks are plain k-means runs (VQ, PQ, OPQ, RQ-KMeans, PSRQ). They share
    one training-set policy so comparisons between them are fair: at most ``max_train_points`` rows
    (default 256 * codebook_size, faiss's own per-centroid cap), a seeded uniform sample drawn once;
    codebook number ``i`` uses k-means seed ``seed + i``."""

    OPTIONS = {"niter": 20, "nredo": 1, "max_train_points": None}

    def _validate_options(self):
        self._check_int("niter", self.options["niter"], minimum=1)
        self._check_int("nredo", self.options["nredo"], minimum=1)
        if self.options["max_train_points"] is not None:
            self._check_int("max_train_points", self.options["max_train_points"],
                            minimum=self.codebook_size)

    @property
    def max_train_points(self):
        configured = self.options["max_train_points"]
        return 256 * self.codebook_size if configured is None else configured

    def _train_codebook(self, inputs, index):
        """k-means codebook number ``index`` (a level or a sub-space), logged with its timing."""
        start = time.perf_counter()
        centroids = train_kmeans(inputs, self.codebook_size, self.options["niter"],
                                 seed=self.seed + index, nredo=self.options["nredo"])
        logger.info("%s codebook %d/%d: k-means k=%d on %d x %d points in %.1f s", self.name,
                    index + 1, self.n_levels, self.codebook_size, inputs.shape[0], inputs.shape[1],
                    time.perf_counter() - start)
        return centroids

    def _state(self):
        """One codebook array per level / sub-space (``self.centroids``); RQ-VAE overrides."""
        return {f"centroids_{level}": c for level, c in enumerate(self.centroids)}

    def _load_state(self, arrays):
        self.centroids = [arrays[f"centroids_{level}"] for level in range(self.n_levels)]
