"""Residual k-means quantizers: RQ-KMeans and PSRQ, sharing one residual loop.

RQ-KMeans (``rq_kmeans``): r_1 = x; at level l, C_l = kmeans(r_l), a_l = nearest(r_l, C_l),
r_{l+1} = r_l - C_l[a_l].

PSRQ (``psrq``, Wang et al., CIKM 2025) differs only in what levels l >= 2 cluster on: the residual
concatenated with the prefix, i.e. what earlier levels already explain,
    z_l = [ r_l ; w * (x - r_l) ]   (2d wide),  C_l = kmeans(z_l),  a_l = nearest(z_l, C_l).
The paper does not say how the next residual follows from a 2d centroid. This project's choice
("reading A", see SPEC.md): assign with the full 2d distance and subtract only the residual half,
    r_{l+1} = r_l - C_l[a_l, :d],
so x - r_l stays the running reconstruction and ``decode`` sums the d-halves of the chosen centroids.
The prefix weight w (option ``prefix_weight``, default 1.0, the paper's plain concatenation) scales
how strongly level l >= 2 codes follow the earlier levels' semantics.

``prefix_weight: auto`` picks w per level l >= 2 at fit so that both halves of the training input
have the same mean squared norm: w_l = sqrt(mean ||r_l||^2 / mean ||x - r_l||^2) over the training
sample at that level (with unit-norm rows the prefix x - r_l is the running reconstruction, nearly
unit length, while the residual shrinks level by level, so w = 1 lets the prefix half dominate the
2d k-means and deeper codes re-encode level 1). If the prefix is zero on every training row (e.g.
all-zero embeddings) any w gives the same training input; w_l = 1.0 (the default) is then stored,
with a warning. The chosen weights are part of the fitted state (``prefix_weights``, saved with the
quantizer and logged): encode always uses the stored weights and never recomputes them from the data
it encodes.

Training-set policy (identical for both, see ``KMeansQuantizer``, so their comparison is fair):
codebooks are trained on a seeded sample of at most ``max_train_points`` rows (default
256 * codebook_size) drawn once and reused at every level; level l's k-means uses seed + l - 1.
Encoding then assigns every row, ``chunk_size`` rows at a time, so the 2d-wide PSRQ input only ever
exists for one chunk (or the training sample), never for all N items.
"""
import logging

import numpy as np

from recbole_psrq.errors import ConfigError, DataFormatError
from recbole_psrq.quantization.base import KMeansQuantizer
from recbole_psrq.quantization.kmeans import nearest_centroid, squared_distances

logger = logging.getLogger(__name__)


class ResidualKMeansQuantizer(KMeansQuantizer):
    """RQ-KMeans: L levels of k-means, each on the residual left by the previous levels."""

    name = "rq_kmeans"

    def _level_inputs(self, x, residual, level):
        """The points level ``level`` (0-based) is trained on. RQ: the residual itself."""
        return residual

    def _assign(self, level, residual, codes, centroids):
        """Nearest level-``level`` centroid of each item's level input; ``codes`` holds the
        earlier levels' codes."""
        return nearest_centroid(residual, centroids)

    def _run_levels(self, x, codebook_for_level):
        """The residual loop shared by fit and encode (and by RQ and PSRQ).
        ``codebook_for_level(level, residual)`` returns that level's centroids: trained in fit,
        stored in encode."""
        residual = x.copy()
        codes = np.empty((x.shape[0], self.n_levels), dtype=np.int64)
        for level in range(self.n_levels):
            centroids = codebook_for_level(level, residual)
            codes[:, level] = self._assign(level, residual, codes, centroids)
            residual -= centroids[codes[:, level], :x.shape[1]]
        return codes

    def _fit(self, X):
        sample = self._training_sample(X, self.max_train_points)
        self.centroids = []

        def train_level(level, residual):
            self._before_level_fit(sample, residual, level)
            inputs = self._level_inputs(sample, residual, level)
            self.centroids.append(self._train_codebook(inputs, level))
            return self.centroids[-1]

        self._run_levels(sample, train_level)

    def _before_level_fit(self, x, residual, level):
        """Hook run at fit before level ``level`` is trained (PSRQ picks its auto prefix weight)."""

    def _encode_chunk(self, x):
        return self._run_levels(x, lambda level, residual: self.centroids[level])

    def _decode(self, codes):
        reconstruction = np.zeros((codes.shape[0], self.dim), dtype=np.float32)
        for level in range(codes.shape[1]):
            reconstruction += self.centroids[level][codes[:, level], :self.dim]
        return reconstruction


class PSRQQuantizer(ResidualKMeansQuantizer):
    """PSRQ: like RQ-KMeans, but levels >= 2 cluster on [residual ; prefix_weight * prefix]."""

    name = "psrq"
    AUTO = "auto"
    OPTIONS = {**ResidualKMeansQuantizer.OPTIONS, "prefix_weight": 1.0}

    def _validate_options(self):
        super()._validate_options()
        weight = self.options["prefix_weight"]
        if weight != self.AUTO and (isinstance(weight, bool)
                                    or not isinstance(weight, (int, float, np.integer, np.floating))
                                    or not np.isfinite(weight) or weight < 0):
            raise ConfigError(
                f"Quantizer 'psrq': prefix_weight must be a number >= 0 or '{self.AUTO}' (per level, "
                f"equal mean squared norms of the residual and prefix halves), got {weight!r}."
            )
        # prefix_weights[l]: the w used at level l (None at level 1, which has no prefix half);
        # with 'auto' they are only known after fit.
        if weight == self.AUTO:
            self.prefix_weights = [None] * self.n_levels
        else:
            self.prefix_weights = [None] + [float(weight)] * (self.n_levels - 1)

    def _before_level_fit(self, x, residual, level):
        if level == 0 or self.options["prefix_weight"] != self.AUTO:
            return
        residual_sq = float(np.mean(np.einsum("ij,ij->i", residual, residual, dtype=np.float64)))
        prefix = x - residual
        prefix_sq = float(np.mean(np.einsum("ij,ij->i", prefix, prefix, dtype=np.float64)))
        if prefix_sq > 0:
            weight = float(np.sqrt(residual_sq / prefix_sq))
            logger.info("psrq level %d/%d: prefix_weight auto = %.4f (mean ||residual||^2 %.4g, "
                        "mean ||prefix||^2 %.4g)", level + 1, self.n_levels, weight, residual_sq,
                        prefix_sq)
        else:
            weight = 1.0
            logger.warning("psrq level %d/%d: prefix_weight auto: the prefix is zero on every "
                           "training row, so the weight cannot change this level's input; using "
                           "1.0", level + 1, self.n_levels)
        self.prefix_weights[level] = weight

    def _fit(self, X):
        if self.options["prefix_weight"] == self.AUTO:
            self.prefix_weights = [None] * self.n_levels
        super()._fit(X)

    def _weight(self, level):
        return np.float32(self.prefix_weights[level])

    def _level_inputs(self, x, residual, level):
        if level == 0:
            return residual
        inputs = np.empty((x.shape[0], 2 * x.shape[1]), dtype=np.float32)
        inputs[:, :x.shape[1]] = residual
        np.subtract(x, residual, out=inputs[:, x.shape[1]:])
        inputs[:, x.shape[1]:] *= self._weight(level)
        return inputs

    def _assign(self, level, residual, codes, centroids):
        """argmin_j ||z - C_j||^2 for z = [r ; w p] without building z: the prefix p is the sum of
        the earlier levels' chosen centroids (d-halves), so p . Cp_j is a sum of k x k table
        lookups, and the cost is one d-wide distance matrix, as for RQ, instead of a 2d-wide one.
        The ||w p||^2 term is the same for every j and is dropped."""
        if level == 0:
            return super()._assign(level, residual, codes, centroids)
        dim, weight = residual.shape[1], self._weight(level)
        prefix_half = centroids[:, dim:]
        scores = squared_distances(residual, centroids[:, :dim])
        scores += (prefix_half ** 2).sum(1)
        for earlier in range(level):
            table = self.centroids[earlier][:, :dim] @ prefix_half.T  # (k earlier, k this level)
            scores -= 2 * weight * table[codes[:, earlier]]
        return scores.argmin(1).astype(np.int64)

    def _state(self):
        """The codebooks and the per-level prefix weights actually used (NaN at level 1)."""
        weights = [np.nan if w is None else w for w in self.prefix_weights]
        return {**super()._state(), "prefix_weights": np.array(weights, dtype=np.float64)}

    def _load_state(self, arrays):
        super()._load_state(arrays)
        if "prefix_weights" in arrays:
            stored = np.asarray(arrays["prefix_weights"], dtype=np.float64)
            if stored.shape != (self.n_levels,) or not np.isfinite(stored[1:]).all():
                raise DataFormatError(
                    f"psrq quantizer file: 'prefix_weights' must hold {self.n_levels} per-level "
                    f"weights (finite from level 2 on), got {stored.tolist()}; refit and save again."
                )
            self.prefix_weights = [None] + [float(w) for w in stored[1:]]
        elif self.options["prefix_weight"] == self.AUTO:
            raise DataFormatError(
                "psrq quantizer file: prefix_weight is 'auto' but the file holds no fitted "
                "'prefix_weights'; refit and save the quantizer again."
            )
        # files written before prefix_weights was saved: the numeric option is the weight
