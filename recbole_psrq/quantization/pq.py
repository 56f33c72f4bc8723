"""Product quantisation: PQ and OPQ.

PQ (``pq``, the paper's Table 3 uses L = 4): the d dimensions are cut into ``n_levels`` contiguous
sub-spaces and each gets its own k-means codebook; code l is the nearest centroid of sub-vector l.
The sub-k-means runs use the same seeded k-means and training sample as the residual quantizers
(rather than faiss.ProductQuantizer's internal trainer) so every quantizer here is trained under one
policy, and any codebook_size works (faiss PQ needs a power of two). When d is not divisible by L,
the sub-spaces differ in width by at most one dimension (``numpy.array_split``): the project's choice,
no padding.

OPQ (``opq``): PQ after a learned orthogonal rotation (faiss.OPQMatrix, ``opq_niter`` alternations;
its inner PQ uses 2^ceil(log2 k) centroids per sub-space). faiss requires d divisible by L here.
``decode`` rotates the reconstruction back, so it lives in the normalised input space like the
others.
"""
import faiss
import numpy as np

from recbole_psrq.errors import ConfigError
from recbole_psrq.quantization.base import KMeansQuantizer
from recbole_psrq.quantization.kmeans import nearest_centroid


class ProductQuantizer(KMeansQuantizer):
    name = "pq"
    DEFAULT_LEVELS = 4

    def _subspaces(self):
        """(start, stop) column ranges of the ``n_levels`` sub-spaces."""
        sizes = [len(part) for part in np.array_split(np.arange(self.dim), self.n_levels)]
        stops = np.cumsum(sizes)
        return list(zip((stops - sizes).tolist(), stops.tolist()))

    def _fit(self, X):
        if self.dim < self.n_levels:
            raise ConfigError(
                f"Quantizer '{self.name}' splits the {self.dim} embedding dimensions into "
                f"n_levels={self.n_levels} sub-spaces; use n_levels <= {self.dim}."
            )
        sample = self._training_sample(X, self.max_train_points)
        sample = self._learn_rotation(sample)
        self.centroids = [
            self._train_codebook(sample[:, start:stop], level)
            for level, (start, stop) in enumerate(self._subspaces())
        ]

    def _learn_rotation(self, sample):
        """Hook for OPQ: returns the (rotated) training sample. PQ works in the input space."""
        return sample

    def _rotate(self, x):
        return x

    def _unrotate(self, x):
        return x

    def _encode_chunk(self, x):
        x = self._rotate(x)
        codes = np.empty((x.shape[0], self.n_levels), dtype=np.int64)
        for level, (start, stop) in enumerate(self._subspaces()):
            codes[:, level] = nearest_centroid(x[:, start:stop], self.centroids[level])
        return codes

    def _decode(self, codes):
        """Concatenated sub-space centroids. With fewer levels than sub-spaces, the missing
        sub-spaces are left at zero (a coarser reconstruction, consistent with the residual
        quantizers' ``n_levels``)."""
        reconstruction = np.zeros((codes.shape[0], self.dim), dtype=np.float32)
        for level, (start, stop) in enumerate(self._subspaces()[:codes.shape[1]]):
            reconstruction[:, start:stop] = self.centroids[level][codes[:, level]]
        return self._unrotate(reconstruction)


class OPQQuantizer(ProductQuantizer):
    name = "opq"
    OPTIONS = {**ProductQuantizer.OPTIONS, "opq_niter": 20}

    def _validate_options(self):
        super()._validate_options()
        self._check_int("opq_niter", self.options["opq_niter"], minimum=1)

    def _learn_rotation(self, sample):
        if self.dim % self.n_levels:
            raise ConfigError(
                f"Quantizer 'opq' needs the embedding dimension ({self.dim}) to be divisible by "
                f"n_levels ({self.n_levels}). Pick a divisor of {self.dim} as n_levels, or use 'pq', "
                "which accepts uneven sub-spaces."
            )
        opq = faiss.OPQMatrix(self.dim, self.n_levels)
        opq.niter = self.options["opq_niter"]
        opq.max_train_points = sample.shape[0]  # already sampled by the caller
        inner_bits = int(np.ceil(np.log2(self.codebook_size)))
        inner_pq = faiss.ProductQuantizer(self.dim, self.n_levels, inner_bits)
        inner_pq.cp.seed = self.seed
        opq.pq = inner_pq
        opq.train(np.ascontiguousarray(sample))
        # OPQMatrix applies y = A x; A (d x d) is orthonormal, so x = A^T y.
        self.rotation = faiss.vector_to_array(opq.A).reshape(self.dim, self.dim).astype(np.float32)
        return self._rotate(sample)

    def _rotate(self, x):
        return x @ self.rotation.T

    def _unrotate(self, x):
        return x @ self.rotation

    def _state(self):
        return {**super()._state(), "rotation": self.rotation}

    def _load_state(self, arrays):
        super()._load_state(arrays)
        self.rotation = arrays["rotation"]
