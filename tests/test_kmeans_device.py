"""faiss k-means trains on a GPU when faiss sees one (issue 14), and on the CPU otherwise or when told."""
import numpy as np

from recbole_psrq.quantization import kmeans


class RecordingKmeans:
    calls = []

    def __init__(self, dim, k, **kwargs):
        RecordingKmeans.calls.append(kwargs)
        self.centroids = np.zeros((k, dim), dtype=np.float32)

    def train(self, points):
        pass


def test_kmeans_uses_the_gpus_faiss_sees_unless_told_not_to(monkeypatch):
    points = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    monkeypatch.setattr(kmeans.faiss, "Kmeans", RecordingKmeans)
    monkeypatch.setattr(kmeans.faiss, "get_num_gpus", lambda: 2, raising=False)
    kmeans.train_kmeans(points, 4, 5, seed=0)
    assert RecordingKmeans.calls[-1]["gpu"] == 2
    monkeypatch.setenv("RECBOLE_PSRQ_FAISS_GPU", "0")
    kmeans.train_kmeans(points, 4, 5, seed=0)
    assert RecordingKmeans.calls[-1]["gpu"] is False
    monkeypatch.delenv("RECBOLE_PSRQ_FAISS_GPU")
    monkeypatch.setattr(kmeans.faiss, "get_num_gpus", lambda: 0, raising=False)
    kmeans.train_kmeans(points, 4, 5, seed=0)
    assert RecordingKmeans.calls[-1]["gpu"] is False


def test_on_this_cpu_build_k_means_stays_on_the_cpu_and_is_deterministic():
    points = np.random.default_rng(1).normal(size=(200, 8)).astype(np.float32)
    assert kmeans.kmeans_gpus() == 0  # faiss-cpu
    a = kmeans.train_kmeans(points, 8, 10, seed=3)
    assert a.shape == (8, 8) and a.dtype == np.float32
    assert np.array_equal(a, kmeans.train_kmeans(points, 8, 10, seed=3))
