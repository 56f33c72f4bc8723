"""Seeded k-means training and nearest-centroid assignment on top of faiss.

The caller decides which points to train on (see ``Quantizer._training_sample``); faiss is told not
to subsample again, so the training set is exactly what the caller passed and identical settings
give identical centroids. faiss k-means is deterministic for a fixed seed under OpenMP threading
(points are assigned independently, centroids are accumulated per centroid range), which the test
suite checks.

``niter`` is a maximum: faiss stops as soon as an iteration no longer lowers the objective. That
is a fixed point of Lloyd's algorithm, so the centroids equal those of running all ``niter``
iterations (checked: bit-identical), but run time depends on how fast the data converges.

When faiss sees a GPU (a faiss-gpu build and a visible device), k-means trains there: the same call and
outputs, but the centroids are not bit-identical to the CPU's (other float summation order), so the SID
cache records the device (``kmeans_device`` in the quantizer report). ``RECBOLE_PSRQ_FAISS_GPU=0`` keeps
k-means on the CPU.
"""
import os

import faiss
import numpy as np


def kmeans_gpus():
    """How many GPUs faiss k-means uses here: 0 with faiss-cpu, without a device, or when
    ``RECBOLE_PSRQ_FAISS_GPU=0``."""
    if os.environ.get("RECBOLE_PSRQ_FAISS_GPU", "1") == "0" or not hasattr(faiss, "get_num_gpus"):
        return 0
    return int(faiss.get_num_gpus())


def train_kmeans(points, k, niter, seed, nredo=1):
    """float32 (k, dim) centroids of ``points`` (n, dim) after ``niter`` Lloyd iterations, best of
    ``nredo`` seeded restarts."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    n, dim = points.shape
    kmeans = faiss.Kmeans(
        dim,
        int(k),
        niter=int(niter),
        nredo=int(nredo),
        seed=int(seed),
        max_points_per_centroid=-(-n // int(k)),  # = ceil(n / k): never subsample inside faiss
        min_points_per_centroid=1,  # the caller already enforces n >= k; skip faiss's warning
        verbose=False,
        gpu=kmeans_gpus() or False,
    )
    kmeans.train(points)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def nearest_centroid(points, centroids):
    """int64 index of the L2-nearest centroid for every row of ``points``."""
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, nearest = index.search(np.ascontiguousarray(points, dtype=np.float32), 1)
    return nearest[:, 0].astype(np.int64)


def squared_distances(points, centroids):
    """float32 (n, k) matrix of squared L2 distances, computed with faiss's BLAS (so the thread
    limit set through faiss applies)."""
    return faiss.pairwise_distances(np.ascontiguousarray(points, dtype=np.float32),
                                    np.ascontiguousarray(centroids, dtype=np.float32))
