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

Training-set policy (identical for both, see ``KMeansQuantizer``, so their comparison is fair):
codebooks are trained on a seeded sample of at most ``max_train_points`` rows (default
256 * codebook_size) drawn once and reused at every level; level l's k-means uses seed + l - 1.
Encoding then assigns every row, ``chunk_size`` rows at a time, so the 2d-wide PSRQ input only ever
exists for one chunk (or the training sample), never for all N items.
"""
import numpy as np

from recbole_psrq.errors import ConfigError
from recbole_psrq.quantization.base import KMeansQuantizer
from recbole_psrq.quantization.kmeans import nearest_centroid, squared_distances


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
            inputs = self._level_inputs(sample, residual, level)
            self.centroids.append(self._train_codebook(inputs, level))
            return self.centroids[-1]

        self._run_levels(sample, train_level)

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
    OPTIONS = {**ResidualKMeansQuantizer.OPTIONS, "prefix_weight": 1.0}

    def _validate_options(self):
        super()._validate_options()
        weight = self.options["prefix_weight"]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ConfigError(
                f"Quantizer 'psrq': prefix_weight must be a number >= 0, got {weight!r}."
            )

    def _level_inputs(self, x, residual, level):
        if level == 0:
            return residual
        inputs = np.empty((x.shape[0], 2 * x.shape[1]), dtype=np.float32)
        inputs[:, :x.shape[1]] = residual
        np.subtract(x, residual, out=inputs[:, x.shape[1]:])
        inputs[:, x.shape[1]:] *= np.float32(self.options["prefix_weight"])
        return inputs

    def _assign(self, level, residual, codes, centroids):
        """argmin_j ||z - C_j||^2 for z = [r ; w p] without building z: the prefix p is the sum of
        the earlier levels' chosen centroids (d-halves), so p . Cp_j is a sum of k x k table
        lookups, and the cost is one d-wide distance matrix, as for RQ, instead of a 2d-wide one.
        The ||w p||^2 term is the same for every j and is dropped."""
        if level == 0:
            return super()._assign(level, residual, codes, centroids)
        dim, weight = residual.shape[1], np.float32(self.options["prefix_weight"])
        prefix_half = centroids[:, dim:]
        scores = squared_distances(residual, centroids[:, :dim])
        scores += (prefix_half ** 2).sum(1)
        for earlier in range(level):
            table = self.centroids[earlier][:, :dim] @ prefix_half.T  # (k earlier, k this level)
            scores -= 2 * weight * table[codes[:, earlier]]
        return scores.argmin(1).astype(np.int64)
