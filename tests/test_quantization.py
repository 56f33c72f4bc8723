"""Quantizers and the SID quality report (small synthetic data; the whole file runs in seconds)."""
import math
import re

import numpy as np
import pytest

from recbole_psrq.errors import ConfigError, DataFormatError
from recbole_psrq.quantization import (QUANTIZERS, build_quantizer, load_quantizer,
                                       sid_quality_report)
from recbole_psrq.quantization.report import (MIN_DISTINCT_SID_SHARE, NMI_LEVEL1_WARN, knn_recall,
                                              normalized_mutual_info, numpy_normalized_mutual_info,
                                              purity)
from recbole_psrq.quantization.residual import PSRQQuantizer

K = 8
# Small networks so RQ-VAE trains in about a second; everything else uses the defaults.
FAST_OPTIONS = {"rq_vae": {"epochs": 3, "batch_size": 128, "hidden_dims": [32, 16], "latent_dim": 8}}


def make(name, **kwargs):
    return build_quantizer(name, **{"codebook_size": K, "seed": 0, **FAST_OPTIONS.get(name, {}),
                                    **kwargs})


@pytest.fixture(scope="module")
def data():
    """500 items in 16-d from 5 Gaussian clusters; the cluster is the item's label."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 16))
    labels = rng.integers(0, 5, 500)
    X = (centers[labels] + 0.4 * rng.normal(size=(500, 16))).astype(np.float32)
    return X, labels


def partition(column):
    """Items grouped by code, independent of how k-means numbered its centroids."""
    return sorted(sorted(np.flatnonzero(column == c).tolist()) for c in np.unique(column))


# ---------------------------------------------------------------- PSRQ vs RQ-KMeans (reading A)

def test_psrq_level1_is_rq_level1(data):
    X, _ = data
    rq = make("rq_kmeans").fit(X)
    psrq = make("psrq").fit(X)
    np.testing.assert_array_equal(psrq.centroids[0], rq.centroids[0])
    np.testing.assert_array_equal(psrq.encode(X)[:, 0], rq.encode(X)[:, 0])
    assert psrq.centroids[1].shape == (K, 32) and rq.centroids[1].shape == (K, 16)


def test_hand_computed_two_level_example():
    # 1-D points 0, 1, 10, 11 with k=2, no normalisation. Level 1 (both): {0,1} -> 0.5 and
    # {10,11} -> 10.5, residuals -0.5, 0.5, -0.5, 0.5.
    # RQ level 2 clusters the residuals: {0,10} -> -0.5, {1,11} -> +0.5 (exact reconstruction).
    # PSRQ level 2 clusters z = [r ; x - r] = (-.5,.5) (.5,.5) (-.5,10.5) (.5,10.5): the best 2-means
    # split is by prefix, centroids (0, .5) and (0, 10.5); next residual r - 0 = r, so the
    # reconstruction stays at the level-1 centroids.
    X = np.array([[0.0], [1.0], [10.0], [11.0]], dtype=np.float32)
    options = dict(n_levels=2, codebook_size=2, normalize=False, nredo=10)
    rq = build_quantizer("rq_kmeans", **options).fit(X)
    psrq = build_quantizer("psrq", **options).fit(X)
    rq_codes, psrq_codes = rq.encode(X), psrq.encode(X)

    assert partition(rq_codes[:, 0]) == partition(psrq_codes[:, 0]) == [[0, 1], [2, 3]]
    assert partition(rq_codes[:, 1]) == [[0, 2], [1, 3]]
    assert partition(psrq_codes[:, 1]) == [[0, 1], [2, 3]]
    np.testing.assert_allclose(sorted(psrq.centroids[1].tolist()), [[0, 0.5], [0, 10.5]], atol=1e-6)
    np.testing.assert_allclose(rq.decode(rq_codes), X, atol=1e-6)
    np.testing.assert_allclose(psrq.decode(psrq_codes)[:, 0], [0.5, 0.5, 10.5, 10.5], atol=1e-6)


def test_hand_computed_example_where_weight_and_prefix_matter():
    # Same points, w = 0.05. Level 1 as above: prefix x - r = 0.5, 0.5, 10.5, 10.5 (not x = 0, 1, 10, 11).
    # Level 2 clusters z = [r ; w (x - r)] = (-.5, .025) (.5, .025) (-.5, .525) (.5, .525): splitting by
    # residual costs 4 * (.25)^2 / 2 = .125 + .125 = .25 < 1 (split by prefix), so {0, 10} and {1, 11},
    # centroids (-.5, w * 5.5) and (.5, w * 5.5); r - C[:d] = 0, reconstruction exact.
    # A level-2 input without the weight would split by prefix (as with w = 1); prefix x instead of
    # x - r gives centroids (-.5, w * 5) and (.5, w * 6).
    X = np.array([[0.0], [1.0], [10.0], [11.0]], dtype=np.float32)
    psrq = build_quantizer("psrq", n_levels=2, codebook_size=2, normalize=False, nredo=10,
                           prefix_weight=0.05).fit(X)
    codes = psrq.encode(X)
    assert partition(codes[:, 0]) == [[0, 1], [2, 3]]
    assert partition(codes[:, 1]) == [[0, 2], [1, 3]]
    np.testing.assert_allclose(sorted(psrq.centroids[1].tolist()), [[-0.5, 0.275], [0.5, 0.275]], atol=1e-6)
    np.testing.assert_allclose(psrq.decode(codes), X, atol=1e-6)


def record_codebook_inputs(monkeypatch):
    """A list that receives a copy of what PSRQ gives k-means at each level."""
    seen = []
    original = PSRQQuantizer._train_codebook

    def spy(self, inputs, index):
        seen.append(np.array(inputs, copy=True))
        return original(self, inputs, index)

    monkeypatch.setattr(PSRQQuantizer, "_train_codebook", spy)
    return seen


@pytest.mark.parametrize("weight", [0.3, 2.5])
def test_psrq_trains_level_2_on_residual_and_weighted_prefix(data, weight, monkeypatch):
    """What k-means is given at level >= 2 is exactly [r ; w (x - r)] (reading A), computed by hand
    from the fitted level-1 codebook."""
    X, _ = data
    seen = record_codebook_inputs(monkeypatch)
    psrq = make("psrq", n_levels=2, prefix_weight=weight).fit(X)
    x = X / np.linalg.norm(X, axis=1, keepdims=True)
    level1 = psrq.centroids[0]
    r = x - level1[((x[:, None, :] - level1[None]) ** 2).sum(-1).argmin(1)]
    assert seen[0].shape == (500, 16) and seen[1].shape == (500, 32)
    np.testing.assert_allclose(seen[0], x, atol=1e-6)
    np.testing.assert_allclose(seen[1], np.hstack([r, weight * (x - r)]), atol=1e-5)


@pytest.mark.parametrize("weight", [1.0, 2.5])
def test_psrq_encode_is_reading_a(data, weight):
    """encode == a plain numpy transcription of reading A on the fitted centroids."""
    X, _ = data
    psrq = make("psrq", prefix_weight=weight).fit(X)
    x = X / np.linalg.norm(X, axis=1, keepdims=True)
    x = x.astype(np.float64)
    residual = x.copy()
    expected = []
    for level, centroids in enumerate(psrq.centroids):
        z = residual if level == 0 else np.hstack([residual, weight * (x - residual)])
        codes = ((z[:, None, :] - centroids[None].astype(np.float64)) ** 2).sum(-1).argmin(1)
        residual = residual - centroids[codes, :16]
        expected.append(codes)
    np.testing.assert_array_equal(psrq.encode(X), np.stack(expected, 1))
    np.testing.assert_allclose(psrq.decode(psrq.encode(X)), x - residual, atol=1e-5)


def test_psrq_with_zero_prefix_weight_is_rq(data):
    X, _ = data
    np.testing.assert_array_equal(make("psrq", prefix_weight=0.0).fit(X).encode(X),
                                  make("rq_kmeans").fit(X).encode(X))


@pytest.mark.parametrize("name", ["rq_kmeans", "psrq"])
def test_reconstruction_error_falls_with_each_level(data, name):
    X, _ = data
    quantizer = make(name, n_levels=4).fit(X)
    codes = quantizer.encode(X)
    x = quantizer.preprocess(X)
    errors = [((x - quantizer.decode(codes, n_levels=l)) ** 2).sum(1).mean() for l in range(1, 5)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors


def test_training_sample_policy_is_shared(data):
    """With max_train_points < N both train on the same seeded sample: level 1 still matches."""
    X, _ = data
    rq = make("rq_kmeans", max_train_points=100).fit(X)
    psrq = make("psrq", max_train_points=100).fit(X)
    np.testing.assert_array_equal(rq.centroids[0], psrq.centroids[0])
    assert not np.array_equal(rq.centroids[0], make("rq_kmeans").fit(X).centroids[0])


# ---------------------------------------------------------------- every quantizer

@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_codes_shape_dtype_range_and_determinism(data, name):
    X, _ = data
    codes = make(name).fit(X).encode(X)
    levels = {"vq": 1, "pq": 4, "opq": 4}.get(name, 3)
    assert codes.shape == (500, levels) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < K
    np.testing.assert_array_equal(make(name).fit(X).encode(X), codes)
    assert not np.array_equal(make(name, seed=1).fit(X).encode(X), codes)


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_save_load_round_trip(data, name, tmp_path):
    X, _ = data
    quantizer = make(name).fit(X)
    codes = quantizer.encode(X)
    quantizer.save(tmp_path / f"{name}.npz")
    loaded = load_quantizer(tmp_path / f"{name}.npz")
    assert type(loaded) is type(quantizer) and loaded.config == quantizer.config
    np.testing.assert_array_equal(loaded.encode(X), codes)
    np.testing.assert_array_equal(loaded.decode(codes), quantizer.decode(codes))
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.npz"]  # no temp file left behind
    assert quantizer.decode(codes).shape == (500, 16)


def test_chunked_encoding_matches_one_chunk(data):
    X, _ = data
    whole = make("psrq").fit(X)
    chunked = make("psrq", chunk_size=7).fit(X)
    np.testing.assert_array_equal(chunked.encode(X), whole.encode(X))


def test_default_faiss_threading_is_deterministic(data):
    X, _ = data
    first = make("psrq", threads=None).fit(X).encode(X)
    np.testing.assert_array_equal(make("psrq", threads=None).fit(X).encode(X), first)


def test_pq_splits_uneven_dimensions(data):
    X, _ = data
    pq = make("pq").fit(X[:, :10])
    assert [stop - start for start, stop in pq._subspaces()] == [3, 3, 2, 2]
    assert pq.decode(pq.encode(X[:, :10])).shape == (500, 10)


def test_pq_decode_fills_subspaces_level_by_level(data):
    X, _ = data
    pq = make("pq").fit(X)
    partial = pq.decode(pq.encode(X), n_levels=2)
    assert np.abs(partial[:, 8:]).max() == 0 and np.abs(partial[:, :8]).max() > 0


# ---------------------------------------------------------------- bad input

def test_nonfinite_rows_are_named(data):
    X = data[0].copy()
    X[3, 0], X[7, 5] = np.nan, np.inf
    with pytest.raises(DataFormatError, match=r"2 embedding row\(s\).*\[3, 7\].*impute"):
        make("psrq").fit(X)


def test_too_few_items_for_codebook():
    X = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    with pytest.raises(DataFormatError, match=r"N=5 .*k=8.*smaller codebook_size"):
        make("rq_kmeans").fit(X)


def test_encode_dimension_mismatch(data):
    quantizer = make("psrq").fit(data[0])
    with pytest.raises(DataFormatError, match=r"dimension 12.*fitted on dimension 16"):
        quantizer.encode(data[0][:, :12])


def test_non_2d_input():
    with pytest.raises(DataFormatError, match=r"2-D matrix.*\(10,\)"):
        make("psrq").fit(np.zeros(10, dtype=np.float32))


def test_unknown_quantizer_lists_names():
    names = r"\['opq', 'pq', 'psrq', 'rq_kmeans', 'rq_vae', 'vq'\]"
    with pytest.raises(ConfigError, match=r"'kmeans'.*" + names):
        build_quantizer("kmeans")


def test_unknown_option_lists_allowed():
    with pytest.raises(ConfigError, match=r"\['prefix_weigth'\].*prefix_weight"):
        build_quantizer("psrq", prefix_weigth=0.5)


def test_vq_has_one_level():
    assert build_quantizer("vq").n_levels == 1
    with pytest.raises(ConfigError, match="exactly one level"):
        build_quantizer("vq", n_levels=3)


def test_opq_needs_divisible_dimension(data):
    with pytest.raises(ConfigError, match=r"\(10\).*n_levels \(4\)"):
        make("opq").fit(data[0][:, :10])


def test_encode_before_fit():
    with pytest.raises(ConfigError, match="not fitted"):
        make("psrq").encode(np.zeros((10, 4), dtype=np.float32))


# ---------------------------------------------------------------- report

def test_nmi_matches_hand_computation():
    # a = 000111, b = 001122: H(a) = ln 2, H(b) = ln 3, MI = 2/3 ln 2 (cells (0,0) and (1,2) hold
    # 2 items each with p = 1/3 vs 1/6 expected; the single-item cells carry no information).
    expected = (2 / 3 * math.log(2)) / ((math.log(2) + math.log(3)) / 2)
    assert normalized_mutual_info([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(expected)
    assert normalized_mutual_info([0, 0, 1, 1], ["x", "x", "y", "y"]) == pytest.approx(1.0)
    assert normalized_mutual_info([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0)
    assert normalized_mutual_info([3, 3, 3], [1, 1, 1]) == 1.0
    assert normalized_mutual_info([0, 0, 1, 1], [5, 5, 5, 5]) == 0.0


def test_nmi_agrees_with_the_numpy_fallback_and_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    for _ in range(5):
        a, b = rng.integers(0, 7, 200), rng.integers(0, 4, 200)
        b[:100] = a[:100] % 4
        expected = sklearn_metrics.normalized_mutual_info_score(a, b)  # average_method="arithmetic"
        assert normalized_mutual_info(a, b) == pytest.approx(expected, abs=1e-12)
        assert numpy_normalized_mutual_info(a, b) == pytest.approx(expected, abs=1e-12)


def test_purity_matches_hand_computation():
    assert purity([0, 0, 0, 1, 1, 1], ["a", "a", "b", "b", "b", "b"]) == pytest.approx(5 / 6)


def test_report_counts_on_known_codes():
    codes = np.array([[0, 0], [0, 0], [1, 2], [1, 3]])
    report = sid_quality_report(None, codes, codebook_size=4)
    assert report["utilization"] == [0.5, 0.75]
    assert report["perplexity"][0] == pytest.approx(2.0)
    assert report["perplexity"][1] == pytest.approx(math.exp(1.5 * math.log(2)))
    assert report["collision_rate"] == 0.25 and report["max_items_per_sid"] == 2
    assert report["recon_mse"] is None and report["knn_recall@10"] is None
    assert report["distinct_sid_share"] == 0.75 and report["warnings"] == []


def _copying_codes(n=400, k=8, copy=True, seed=0):
    """(n, 3) codes; level 2 is a relabelling of level 1 when ``copy``, else independent of it."""
    rng = np.random.default_rng(seed)
    level1 = rng.integers(0, k, n)
    level2 = rng.permutation(k)[level1] if copy else rng.integers(0, k, n)
    return np.stack([level1, level2, rng.integers(0, k, n)], 1)


def test_nmi_warning_fires_when_level_2_copies_level_1():
    assert NMI_LEVEL1_WARN == 0.9
    report = sid_quality_report(None, _copying_codes(copy=True), codebook_size=8, name="text_sid")
    assert report["nmi_level1"][1] == pytest.approx(1.0)
    nmi_warnings = [w for w in report["warnings"] if "NMI" in w]
    assert len(nmi_warnings) == 1
    assert nmi_warnings[0].startswith("text_sid level 2: NMI with the level-1 codes is 1.000 > 0.9")
    assert "fewer levels" in nmi_warnings[0] and "larger codebook" in nmi_warnings[0]
    independent = sid_quality_report(None, _copying_codes(copy=False), codebook_size=8)
    assert independent["nmi_level1"][1] < 0.1
    assert not [w for w in independent["warnings"] if "NMI" in w]
    # the threshold is a parameter; level 1 (NMI 1 with itself) never warns
    assert not [w for w in sid_quality_report(None, _copying_codes(copy=True), codebook_size=8,
                                              nmi_level1_warn=1.0)["warnings"] if "NMI" in w]


def test_nmi_warning_on_psrq_that_re_encodes_level_1_and_not_on_rq():
    # the hand-computed example: PSRQ (w = 1) level 2 splits by prefix = level 1; RQ by residual
    X = np.array([[0.0], [1.0], [10.0], [11.0]], dtype=np.float32)
    options = dict(n_levels=2, codebook_size=2, normalize=False, nredo=10)
    psrq = build_quantizer("psrq", **options).fit(X)
    report = sid_quality_report(X, psrq.encode(X), quantizer=psrq, name="toy")
    assert report["nmi_level1"] == [1.0, 1.0]
    assert report["warnings"][0].startswith("toy level 2: NMI with the level-1 codes is 1.000 > 0.9")
    assert "smaller PSRQ prefix_weight (now 1) or prefix_weight: auto" in report["warnings"][0]
    rq = build_quantizer("rq_kmeans", **options).fit(X)
    assert sid_quality_report(X, rq.encode(X), quantizer=rq)["warnings"] == []


def test_distinct_sid_share_warning_threshold():
    assert MIN_DISTINCT_SID_SHARE == 0.5
    half = np.array([[0, 0], [0, 0], [1, 1], [1, 0]])  # 3 distinct SIDs of 4 items: 0.75
    two = np.array([[0, 0], [0, 0], [1, 1], [1, 1]])  # 2 of 4: exactly 0.5, not below
    one = np.array([[0, 0], [0, 0], [0, 0], [1, 1]]) # 2 of 4 too
    assert sid_quality_report(None, half, codebook_size=2)["distinct_sid_share"] == 0.75
    for codes in (two, one):
        report = sid_quality_report(None, codes, codebook_size=2, nmi_level1_warn=1.0)
        assert report["distinct_sid_share"] == 0.5 and report["warnings"] == []
    fired = sid_quality_report(None, two, codebook_size=2, nmi_level1_warn=1.0,
                               min_distinct_sid_share=0.51, name="audio_sid")
    assert fired["warnings"] == [
        "audio_sid: only 2 distinct full SIDs for 4 items (share 0.500 < 0.51); up to 2 items share "
        "one SID and cannot be told apart by it. Try a larger codebook (now 2), or more levels (now 2)."]
    assert fired["warning_thresholds"] == {"nmi_level1": 1.0, "distinct_sid_share": 0.51}
    low = np.zeros((10, 2), dtype=np.int64)
    low[0] = 1  # 2 distinct of 10: 0.2 < 0.5 at the default
    assert any("only 2 distinct full SIDs for 10 items (share 0.200 < 0.5)" in w
               for w in sid_quality_report(None, low, codebook_size=2)["warnings"])


def test_report_keys_and_semantic_drift(data):
    X, labels = data
    quantizer = make("psrq").fit(X)
    labels = labels.astype(object)
    labels[:10] = None  # unknown labels are left out
    report = sid_quality_report(X, quantizer.encode(X), labels=labels, quantizer=quantizer,
                                knn_sample=100)
    for key in ("utilization", "perplexity", "nmi_labels", "purity_labels", "nmi_level1",
                "recon_mse_by_levels"):
        assert len(report[key]) == 3, key
    assert report["labelled_items"] == 490
    assert report["nmi_level1"][0] == 1.0
    assert 0 < report["knn_recall@10"] <= 1 and 0 < report["recon_mse"] < 2
    assert report["recon_mse"] == report["recon_mse_by_levels"][-1]
    # 5 well-separated clusters, k=8: level 1 recovers the labels almost perfectly.
    assert report["nmi_labels"][0] > 0.8 and report["purity_labels"][0] > 0.95


class _LookupQuantizer:
    """Decodes each code to a fixed 1-D point; the input space is used as is."""

    options = {"chunk_size": 100, "threads": None}

    def __init__(self, table):
        self.table = np.asarray(table, dtype=np.float32)

    def preprocess(self, X):
        return np.asarray(X, dtype=np.float32)

    def decode(self, codes, n_levels=None):
        return self.table[codes[:, 0]][:, None]


def test_knn_recall_splits_ties_by_expectation():
    # x = 0, 1, 2.5, 10; true nearest neighbours: 0->1, 1->0, 2.5->1, 10->2.5.
    # Items 0 and 1 share SID 0 (decoded 0.5), item 2 -> 2.0, item 3 -> 10.0. Queries 0, 1 and 3 get
    # their neighbour exactly; query 2 sees items 0 and 1 tied for its one slot -> 1/2 credit.
    X = np.array([[0.0], [1.0], [2.5], [10.0]], dtype=np.float32)
    codes = np.array([[0], [0], [1], [2]])
    recall = knn_recall(X, codes, _LookupQuantizer([0.5, 2.0, 10.0]), sample=4, k=1)
    assert recall == pytest.approx((1 + 1 + 0.5 + 1) / 4)


def test_knn_recall_is_one_for_lossless_codes():
    X = np.random.default_rng(1).normal(size=(40, 4)).astype(np.float32)
    vq = build_quantizer("vq", codebook_size=40, normalize=False).fit(X)
    codes = vq.encode(X)
    assert len(np.unique(codes)) == 40
    assert knn_recall(X, codes, vq, sample=40, k=10) == pytest.approx(1.0)


@pytest.mark.parametrize("weight", [True, "1", -0.5, "Auto", "automatic", float("nan"), float("inf"),
                                    None, [0.5]])
def test_psrq_prefix_weight_must_be_a_number_at_least_0_or_auto(weight):
    with pytest.raises(ConfigError, match=r"prefix_weight must be a number >= 0 or 'auto' .*, got"):
        build_quantizer("psrq", prefix_weight=weight)


@pytest.mark.parametrize("weight", [0, 2, 0.5, np.float32(0.25), "auto"])
def test_psrq_prefix_weight_accepts_numbers_and_auto(weight):
    assert build_quantizer("psrq", prefix_weight=weight).options["prefix_weight"] == weight


# ---------------------------------------------------------------- PSRQ prefix_weight: auto

def test_auto_prefix_weight_hand_computed():
    # 0, 1, 10, 11, k = 2, no normalisation. Level 1: centroids 0.5, 10.5, residuals +-0.5
    # (mean r^2 = 1/4), prefixes 0.5, 0.5, 10.5, 10.5 (mean p^2 = (2 * 1/4 + 2 * 441/4) / 4 = 221/4),
    # so w = sqrt(1/221) ~ 0.067. Level 2 then splits by residual (within-cluster SSE 2 * 2 * (5 w)^2 =
    # 100/221 < 1, the SSE of splitting by prefix), unlike w = 1 (test_hand_computed_two_level_example).
    X = np.array([[0.0], [1.0], [10.0], [11.0]], dtype=np.float32)
    psrq = build_quantizer("psrq", n_levels=2, codebook_size=2, normalize=False, nredo=10,
                           prefix_weight="auto").fit(X)
    assert psrq.prefix_weights[0] is None
    assert psrq.prefix_weights[1] == pytest.approx(math.sqrt(1 / 221), rel=1e-6)
    codes = psrq.encode(X)
    assert partition(codes[:, 1]) == [[0, 2], [1, 3]]
    np.testing.assert_allclose(psrq.decode(codes), X, atol=1e-5)


def test_auto_prefix_weight_equalises_the_halves_at_every_level(data, monkeypatch):
    """k-means at level l >= 2 gets [r ; w_l (x - r)] with w_l = sqrt(mean ||r||^2 / mean ||x - r||^2),
    computed by hand from the fitted codebooks, so both halves have the same mean squared norm."""
    X, _ = data
    seen = record_codebook_inputs(monkeypatch)
    psrq = make("psrq", prefix_weight="auto").fit(X)
    x = X / np.linalg.norm(X, axis=1, keepdims=True)
    r = x.astype(np.float64)
    codes = psrq.encode(X)
    for level in range(3):
        if level:
            prefix = x - r
            w = math.sqrt((r ** 2).sum(1).mean() / (prefix ** 2).sum(1).mean())
            assert psrq.prefix_weights[level] == pytest.approx(w, rel=1e-5)
            assert abs(w - 1) > 0.2 and abs(w - psrq.prefix_weights[3 - level]) > 1e-3
            np.testing.assert_allclose(seen[level], np.hstack([r, w * prefix]), atol=1e-5)
            halves = (seen[level][:, :16] ** 2).sum(1).mean(), (seen[level][:, 16:] ** 2).sum(1).mean()
            assert halves[0] == pytest.approx(halves[1], rel=1e-4)
        r = r - psrq.centroids[level][codes[:, level], :16]
    assert psrq.prefix_weights[0] is None


def _numeric_twin(auto, weights):
    """A PSRQ with the codebooks of ``auto`` but numeric prefix weights ``weights``."""
    twin = make("psrq", n_levels=auto.n_levels, prefix_weight=1.0)
    twin.dim, twin.centroids, twin.prefix_weights = auto.dim, auto.centroids, [None, *weights]
    return twin


def test_auto_weights_are_fitted_once_and_encode_uses_the_stored_ones(data):
    X, _ = data
    auto = make("psrq", n_levels=2, prefix_weight="auto").fit(X)
    stored = auto.prefix_weights[1]
    fixed = make("psrq", n_levels=2, prefix_weight=stored).fit(X)
    np.testing.assert_allclose(fixed.centroids[1], auto.centroids[1], atol=1e-6)
    # a batch of a different shape: points near the level-1 centroids have small residuals, so a
    # weight recomputed on it would be far from the stored one, and it changes the codes
    rng = np.random.default_rng(7)
    batch = (auto.centroids[0][rng.integers(0, K, 300)] + 0.05 * rng.normal(size=(300, 16)))
    batch = batch.astype(np.float32)
    x = auto.preprocess(batch)
    r = x - auto.centroids[0][auto.encode(batch)[:, 0]]
    recomputed = math.sqrt((r ** 2).sum(1).mean() / ((x - r) ** 2).sum(1).mean())
    assert abs(recomputed - stored) > 0.1
    codes = auto.encode(batch)
    np.testing.assert_array_equal(codes, fixed.encode(batch))
    np.testing.assert_array_equal(codes, _numeric_twin(auto, [stored]).encode(batch))
    assert not np.array_equal(codes, _numeric_twin(auto, [recomputed]).encode(batch))
    assert auto.prefix_weights[1] == stored  # encoding does not touch the fitted weights


def test_auto_weights_survive_save_and_load(data, tmp_path):
    X, _ = data
    auto = make("psrq", prefix_weight="auto").fit(X)
    auto.save(tmp_path / "q.npz")
    loaded = load_quantizer(tmp_path / "q.npz")
    assert loaded.options["prefix_weight"] == "auto"
    assert loaded.prefix_weights == auto.prefix_weights and None not in auto.prefix_weights[1:]
    other = X[::-1] * 3 + 1
    np.testing.assert_array_equal(loaded.encode(other), auto.encode(other))
    np.testing.assert_array_equal(
        loaded.encode(other), _numeric_twin(auto, auto.prefix_weights[1:]).encode(other))
    # a file without the fitted weights cannot be encoded with 'auto'; a numeric one still loads
    with np.load(tmp_path / "q.npz") as saved:
        arrays = {k: saved[k] for k in saved.files if k != "prefix_weights"}
    np.savez(tmp_path / "no_weights.npz", **arrays)
    with pytest.raises(DataFormatError, match="holds no fitted 'prefix_weights'; refit"):
        load_quantizer(tmp_path / "no_weights.npz")
    numeric = make("psrq", prefix_weight=0.5).fit(X)
    numeric.save(tmp_path / "n.npz")
    assert load_quantizer(tmp_path / "n.npz").prefix_weights == [None, 0.5, 0.5]


def test_auto_weight_with_a_zero_prefix_is_one(caplog):
    # all-zero rows: level 1 centroids are 0, so the prefix is 0 everywhere and w cannot matter
    psrq = build_quantizer("psrq", n_levels=2, codebook_size=2, prefix_weight="auto")
    with caplog.at_level("WARNING"):
        psrq.fit(np.zeros((10, 3), dtype=np.float32))
    assert psrq.prefix_weights == [None, 1.0]
    assert "prefix is zero on every training row" in caplog.text


def test_auto_weights_in_the_report(data):
    X, _ = data
    auto = make("psrq", prefix_weight="auto").fit(X)
    report = sid_quality_report(X, auto.encode(X), quantizer=auto, knn_sample=50)
    assert report["prefix_weights"] == auto.prefix_weights
    assert make("psrq", prefix_weight=0.5).fit(X).prefix_weights == [None, 0.5, 0.5]
    assert "prefix_weights" not in sid_quality_report(X, make("rq_kmeans").fit(X).encode(X))


def test_kmeans_helpers_take_any_float_input_use_every_point_and_stay_quiet(capfd):
    from recbole_psrq.quantization.kmeans import nearest_centroid, squared_distances, train_kmeans

    # float64 input; 600 points for k = 2 is more than faiss's default cap of 256 points per centroid,
    # so a k-means that subsampled would not end exactly on the means of all points
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(0, 1, 300), rng.normal(10, 1, 300)])[:, None]
    centroids = train_kmeans(points, 2, niter=20, seed=0)
    assert centroids.dtype == np.float32 and centroids.shape == (2, 1)
    nearest = nearest_centroid(points, centroids)
    np.testing.assert_allclose(centroids[:, 0], [points[nearest == j].mean() for j in range(2)], atol=1e-4)
    np.testing.assert_allclose(squared_distances(points, centroids), (points - centroids.T) ** 2, atol=1e-3)
    # niter is honoured: one Lloyd step from the seeded start is not yet the converged codebook
    uniform = rng.random((400, 1))
    assert not np.allclose(train_kmeans(uniform, 2, niter=1, seed=0), train_kmeans(uniform, 2, niter=20, seed=0))
    train_kmeans(points[:3], 2, niter=20, seed=0)  # fewer points than faiss likes per centroid: allowed
    assert capfd.readouterr() == ("", "")  # faiss's progress printing and its small-data warning stay off


# ---------------------------------------------------------------- RQ-VAE as a fair baseline (issue 16)

def _collapsed_init(self, rows):
    """Every codeword of every level at the same point: nearest-codeword ties all go to code 0, the
    other codes never get a gradient, so without revival they stay dead for the whole fit."""
    return np.zeros((self.n_levels, self.codebook_size, self.options["latent_dim"]), np.float32)


def test_rq_vae_revives_dead_codes_of_a_collapsed_codebook(data, monkeypatch):
    from recbole_psrq.quantization.rq_vae import RQVAEQuantizer

    X, _ = data
    monkeypatch.setattr(RQVAEQuantizer, "_init_codebooks", _collapsed_init)
    plain = make("rq_vae", epochs=5, revive_dead_codes=False).fit(X)
    revived = make("rq_vae", epochs=5).fit(X)
    assert plain.codebook_usage["used_share"] == [1 / K] * 3  # only code 0, at every level
    assert plain.training_summary["revived_codes"] == [0, 0, 0]
    # 5 data clusters: at least 4 of the 8 codes stay in use at every level (the plain run: 1)
    assert all(share >= 0.5 for share in revived.codebook_usage["used_share"]), \
        revived.codebook_usage
    assert all(p > 3 for p in revived.codebook_usage["perplexity"]), revived.codebook_usage
    assert all(n >= K - 1 for n in revived.training_summary["revived_codes"])
    assert revived.training_summary["recon_mse"] < plain.training_summary["recon_mse"]


def test_rq_vae_same_seed_same_codes_with_revival(data, monkeypatch):
    from recbole_psrq.quantization.rq_vae import RQVAEQuantizer

    X, _ = data
    monkeypatch.setattr(RQVAEQuantizer, "_init_codebooks", _collapsed_init)
    first = make("rq_vae", epochs=4).fit(X)
    second = make("rq_vae", epochs=4).fit(X)
    assert sum(first.training_summary["revived_codes"]) > 0  # the revival draws are exercised
    np.testing.assert_array_equal(second.codebooks, first.codebooks)
    np.testing.assert_array_equal(second.encode(X), first.encode(X))
    assert second.codebook_usage == first.codebook_usage
    assert not np.array_equal(make("rq_vae", epochs=4, seed=1).fit(X).codebooks, first.codebooks)


def test_rq_vae_stops_early_on_a_plateau(data):
    X, _ = data
    # lr so small that the reconstruction error cannot fall by min_delta (relative) in an epoch
    quantizer = make("rq_vae", epochs=50, patience=3, lr=1e-9).fit(X)
    summary = quantizer.training_summary
    assert summary["epochs_run"] == 4 and summary["max_epochs"] == 50  # epoch 1 + 3 stale ones
    assert summary["stop_reason"].startswith("no relative improvement")
    assert len(summary["recon_mse_per_epoch"]) == 4
    # without a plateau it runs to the maximum
    full = make("rq_vae", epochs=6, patience=6).fit(X).training_summary
    assert full["epochs_run"] == 6 and full["stop_reason"] == "reached the maximum of 6 epochs"


def test_rq_vae_keeps_the_best_epoch(data):
    """A learning rate large enough that the error jumps around: the fitted model is the best epoch's,
    not the last one's, and its report recon MSE is that epoch's."""
    X, _ = data
    quantizer = make("rq_vae", epochs=15, patience=15, lr=0.05).fit(X)
    summary = quantizer.training_summary
    history = summary["recon_mse_per_epoch"]
    assert summary["best_epoch"] < summary["epochs_run"] and min(history) < history[-1]
    assert summary["recon_mse"] == min(history) == history[summary["best_epoch"] - 1]
    report = sid_quality_report(X, quantizer.encode(X), quantizer=quantizer, knn_sample=10)
    assert report["recon_mse"] == pytest.approx(min(history), rel=1e-5)


def test_rq_vae_usage_and_summary_survive_save_and_load(data, tmp_path):
    X, _ = data
    quantizer = make("rq_vae").fit(X)
    assert set(quantizer.codebook_usage) == {"used_share", "perplexity", "used_codes"}
    quantizer.save(tmp_path / "q.npz")
    loaded = load_quantizer(tmp_path / "q.npz")
    assert loaded.codebook_usage == quantizer.codebook_usage
    assert loaded.training_summary == quantizer.training_summary
    # a file without them (written before they existed) still loads, with both None
    with np.load(tmp_path / "q.npz") as f:
        old = {key: f[key] for key in f.files if key not in ("codebook_usage", "training_summary")}
    np.savez(tmp_path / "old.npz", **old)
    old = load_quantizer(tmp_path / "old.npz")
    assert old.codebook_usage is None and old.training_summary is None
    np.testing.assert_array_equal(old.encode(X), quantizer.encode(X))


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_report_has_codebook_usage_per_level_for_every_quantizer(data, name):
    X, _ = data
    quantizer = make(name).fit(X)
    codes = quantizer.encode(X)
    report = sid_quality_report(X, codes, quantizer=quantizer, knn_sample=10)
    for level, column in enumerate(codes.T):
        counts = np.bincount(column, minlength=K)
        p = counts[counts > 0] / len(column)
        assert report["utilization"][level] == (counts > 0).sum() / K
        assert report["perplexity"][level] == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    if name == "rq_vae":  # the stored fit-data usage is the report's on the fit data
        assert quantizer.codebook_usage["used_share"] == report["utilization"]
        assert quantizer.codebook_usage["perplexity"] == pytest.approx(report["perplexity"])


@pytest.mark.parametrize("option", [{"patience": 0}, {"min_delta": -0.1}, {"min_delta": 1.0},
                                    {"min_delta": True}, {"revive_dead_codes": "yes"}])
def test_rq_vae_rejects_bad_training_options(option):
    with pytest.raises(ConfigError, match=next(iter(option))):
        make("rq_vae", **option)


# ---------------------------------------------------------------- base.py (mutation testing, TESTING.md)

def _small(n=12, d=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_base_integer_options_bounds_types_and_message():
    from recbole_psrq.quantization.base import Quantizer

    quantizer = build_quantizer("rq_kmeans", codebook_size=2, seed=np.int64(0), n_levels=1, chunk_size=1,
                                threads=None, niter=1, nredo=1, max_train_points=2)
    assert quantizer.n_levels == 1 and quantizer.options["threads"] is None
    assert build_quantizer("rq_kmeans").n_levels == 3 and Quantizer.DEFAULT_LEVELS == 3
    bad = [("n_levels", 0, 1), ("codebook_size", 1, 2), ("seed", -1, 0), ("chunk_size", 0, 1),
           ("threads", 0, 1), ("niter", 0, 1), ("nredo", 0, 1), ("max_train_points", 3, 4),
           ("n_levels", True, 1), ("seed", 1.0, 0), ("codebook_size", "4", 2)]
    for label, value, minimum in bad:
        kwargs = {"codebook_size": 4, label: value}
        with pytest.raises(ConfigError, match=rf"^Quantizer 'rq_kmeans': {label} must be an integer "
                                              rf">= {minimum}, got {value!r}\.$"):
            build_quantizer("rq_kmeans", **kwargs)
    with pytest.raises(ConfigError, match=r"^Unknown option\(s\) \['a', 'b'\] for quantizer 'vq'\. Allowed "
                                          r"options and their defaults: \{'normalize': True, 'chunk_size': "
                                          r"8192, 'threads': 1, 'niter': 20, 'nredo': 1, "
                                          r"'max_train_points': None\}\.$"):
        build_quantizer("vq", b=1, a=2)


def test_base_config_options_and_max_train_points():
    quantizer = build_quantizer("rq_kmeans", n_levels=np.int64(2), codebook_size=np.int32(4),
                                seed=np.int64(3))
    config = quantizer.config
    assert config == {"quantizer": "rq_kmeans", "n_levels": 2, "codebook_size": 4, "seed": 3,
                      "options": {"normalize": True, "chunk_size": 8192, "threads": 1, "niter": 20,
                                  "nredo": 1, "max_train_points": None}}
    assert all(type(config[key]) is int for key in ("n_levels", "codebook_size", "seed"))
    config["options"]["niter"] = 99
    assert quantizer.options["niter"] == 20  # a copy
    assert quantizer.max_train_points == 256 * 4
    assert build_quantizer("rq_kmeans", codebook_size=4, max_train_points=9).max_train_points == 9
    assert not quantizer.is_fitted and quantizer.dim is None


def test_base_fit_needs_n_at_least_k_and_records_the_dimension():
    quantizer = build_quantizer("vq", codebook_size=4)
    assert quantizer.fit(_small(4, 3)) is quantizer
    assert quantizer.is_fitted and quantizer.dim == 3 and type(quantizer.dim) is int
    with pytest.raises(DataFormatError, match=r"^Cannot fit quantizer 'vq': only N=3 items but codebook_size "
                                              r"k=4, and k-means needs N >= k\. Use a smaller codebook_size "
                                              r"\(at most 3, in practice N/30 or less\) or more items\.$"):
        build_quantizer("vq", codebook_size=4).fit(_small(3, 5))
    with pytest.raises(DataFormatError, match=r"^fit: embeddings must be a 2-D matrix"):
        build_quantizer("vq", codebook_size=4).fit(np.zeros(8))


def test_base_check_matrix_messages_and_no_copy():
    from recbole_psrq.quantization.base import check_matrix, nonfinite_rows

    X = _small()
    assert check_matrix(X, "fit") is X
    ints = np.arange(12).reshape(6, 2)
    assert check_matrix(ints, "fit") is ints
    assert check_matrix([[1.0, 2.0]], "fit").shape == (1, 2)
    assert check_matrix(np.ones((3, 1)), "fit").shape == (3, 1)
    with pytest.raises(DataFormatError, match=r"^encode: embeddings are not a numeric matrix \(.+\)\.$") as e:
        check_matrix([[1.0, 2.0], [3.0]], "encode")
    assert isinstance(e.value.__cause__, ValueError)
    with pytest.raises(DataFormatError, match=r"^fit: embeddings must be a 2-D matrix \(items x dimensions\), "
                                              r"got an array with shape \(2, 2, 2\)\. Reshape it to \(N, d\), "
                                              r"one row per item\.$"):
        check_matrix(np.zeros((2, 2, 2)), "fit")
    with pytest.raises(DataFormatError, match=r"^fit: embeddings must be numeric, got dtype <U1\.$"):
        check_matrix(np.array([["a", "b"]]), "fit")
    for shape in [(0, 4), (4, 0)]:
        with pytest.raises(DataFormatError, match=rf"^encode: embeddings are empty \(shape \({shape[0]}, "
                                                  rf"{shape[1]}\)\)\.$"):
            check_matrix(np.zeros(shape, dtype=np.float32), "encode")
    X = _small(30)
    X[[1, 4, 5, 8, 11, 14, 17, 20, 23, 26, 29], 0] = np.nan
    X[2, 3] = -np.inf
    with pytest.raises(DataFormatError, match=r"^fit: 12 embedding row\(s\) contain NaN or inf, e\.g\. rows "
                                              r"\[1, 2, 4, 5, 8, 11, 14, 17, 20, 23\]\. Drop those items or "
                                              r"impute their embeddings \(e\.g\. with the modality mean\) "
                                              r"before quantising\.$"):
        check_matrix(X, "fit")
    # checked chunk by chunk, indices counted from the start of X
    rows = nonfinite_rows(X, chunk_size=4)
    assert rows.dtype == np.int64
    assert rows.tolist() == [1, 2, 4, 5, 8, 11, 14, 17, 20, 23, 26, 29]
    assert nonfinite_rows(X).tolist() == rows.tolist()
    assert nonfinite_rows(_small(), chunk_size=5).dtype == np.int64
    assert nonfinite_rows(_small(), chunk_size=5).size == 0
    assert nonfinite_rows(ints).dtype == np.int64 and nonfinite_rows(ints).size == 0
    for dtype in (np.float64, np.float16):
        assert nonfinite_rows(np.array([[1.0, 2.0], [np.nan, 0.0], [3.0, np.inf]], dtype=dtype)).tolist() == [1, 2]


def test_base_preprocess_normalises_a_float32_copy_and_keeps_zero_rows():
    X = _small(6, 3).astype(np.float64) * 5
    X[2] = 0
    X[4] = [0.1, -0.2, 0.05]  # norm < 1 is normalised too
    original = X.copy()
    quantizer = build_quantizer("vq", codebook_size=2)
    x = quantizer.preprocess(X)
    assert x.dtype == np.float32 and x is not X
    np.testing.assert_array_equal(X, original)
    np.testing.assert_array_equal(x[2], 0)
    keep = [0, 1, 3, 4, 5]
    np.testing.assert_allclose(x[keep], X[keep] / np.linalg.norm(X[keep], axis=1, keepdims=True), rtol=1e-6)
    raw = build_quantizer("vq", codebook_size=2, normalize=False)
    X32 = X.astype(np.float32)
    y = raw.preprocess(X32)
    np.testing.assert_array_equal(y, X32)
    assert y is not X32 and not np.shares_memory(y, X32)


def test_base_training_sample_is_all_rows_up_to_max_points_else_a_seeded_sorted_sample():
    X = _small(20, 3) * 3
    quantizer = build_quantizer("rq_kmeans", codebook_size=2, seed=5)
    np.testing.assert_array_equal(quantizer._training_sample(X, 20), quantizer.preprocess(X))
    sample = quantizer._training_sample(X, 19)
    rows = np.sort(np.random.default_rng(5).choice(20, size=19, replace=False))
    np.testing.assert_array_equal(sample, quantizer.preprocess(X[rows]))
    assert sample.shape == (19, 3)
    np.testing.assert_array_equal(quantizer._training_sample(X, 7),
                                  quantizer.preprocess(X[np.sort(np.random.default_rng(5).choice(20, size=7,
                                                                                              replace=False))]))


def test_base_train_codebook_passes_its_options_and_logs(monkeypatch, caplog):
    from recbole_psrq.quantization import base

    calls = []

    def fake(inputs, k, niter, seed, nredo):
        calls.append((inputs.shape, k, niter, seed, nredo))
        return np.zeros((k, inputs.shape[1]), dtype=np.float32)

    monkeypatch.setattr(base, "train_kmeans", fake)
    quantizer = build_quantizer("rq_kmeans", n_levels=3, codebook_size=2, seed=7, niter=5, nredo=3)
    with caplog.at_level("INFO", logger=base.__name__):
        quantizer._train_codebook(np.zeros((6, 4), dtype=np.float32), 1)
    assert calls == [((6, 4), 2, 5, 8, 3)]
    found = re.fullmatch(r"rq_kmeans codebook 2/3: k-means k=2 on 6 x 4 points in (\d+\.\d) s", caplog.messages[-1])
    assert found and float(found.group(1)) < 60  # the elapsed time, not a clock reading


def test_base_decode_checks_codes_and_uses_the_first_levels():
    X = _small(40, 4)
    quantizer = build_quantizer("rq_kmeans", n_levels=3, codebook_size=4, niter=2).fit(X)
    codes = quantizer.encode(X)
    full = quantizer.decode(codes)
    assert full.dtype == np.float32 and full.flags["C_CONTIGUOUS"] and full.shape == (40, 4)
    np.testing.assert_array_equal(quantizer.decode(codes.astype(np.int32)), full)
    np.testing.assert_array_equal(quantizer.decode(codes, n_levels=1), quantizer.decode(codes[:, :1]))
    np.testing.assert_array_equal(quantizer.decode(codes[:, :2]), quantizer.decode(codes, n_levels=2))
    assert quantizer.decode(codes.tolist()).shape == (40, 4)
    assert quantizer.decode(np.zeros((0, 3), dtype=np.int64)).shape == (0, 4)
    edge = np.array([[0, 3, 3]])
    assert quantizer.decode(edge).shape == (1, 4)
    with pytest.raises(DataFormatError, match=r"^decode expects an integer code matrix \(N, levels\), got dtype "
                                              r"float64 with shape \(40, 3\)\.$"):
        quantizer.decode(codes.astype(np.float64))
    with pytest.raises(DataFormatError, match=r"^decode expects an integer code matrix \(N, levels\), got dtype "
                                              r"int64 with shape \(3,\)\.$"):
        quantizer.decode(codes[0])
    with pytest.raises(ConfigError, match=r"^Quantizer 'rq_kmeans': n_levels \(decode\) must be an integer >= 1, "
                                          r"got 0\.$"):
        quantizer.decode(codes, n_levels=0)
    with pytest.raises(DataFormatError, match=r"^decode asked for 3 levels, but the codes have 2 and quantizer "
                                              r"'rq_kmeans' has 3\.$"):
        quantizer.decode(codes[:, :2], n_levels=3)
    with pytest.raises(DataFormatError, match=r"^decode asked for 4 levels, but the codes have 4 and quantizer "
                                              r"'rq_kmeans' has 3\.$"):
        quantizer.decode(np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(DataFormatError, match=r"^decode got codes outside \[0, 4\) \(min -1, max 2\); they were "
                                              r"not produced by this quantizer\.$"):
        quantizer.decode(np.array([[-1, 2, 0]]))
    with pytest.raises(DataFormatError, match=r"^decode got codes outside \[0, 4\) \(min 0, max 4\)"):
        quantizer.decode(np.array([[0, 4, 0]]))
    # only the used levels are checked
    assert quantizer.decode(np.array([[1, 9, 9]]), n_levels=1).shape == (1, 4)


def test_base_encode_chunks_and_errors():
    X = _small(30, 4)
    quantizer = build_quantizer("rq_kmeans", n_levels=2, codebook_size=4, niter=2, chunk_size=4).fit(X)
    codes = quantizer.encode(X)
    assert codes.dtype == np.int64 and codes.shape == (30, 2)
    whole = build_quantizer("rq_kmeans", n_levels=2, codebook_size=4, niter=2).fit(X)
    np.testing.assert_array_equal(codes, whole.encode(X))
    np.testing.assert_array_equal(quantizer.encode(X[:1]), codes[:1])
    with pytest.raises(DataFormatError, match=r"^encode got embeddings of dimension 3, but quantizer 'rq_kmeans' "
                                              r"was fitted on dimension 4\. Encode the same embedding type "
                                              r"\(modality / model\) that the quantizer was fitted on, or fit a "
                                              r"new quantizer\.$"):
        quantizer.encode(X[:, :3])
    with pytest.raises(DataFormatError, match=r"^encode: embeddings must be a 2-D"):
        quantizer.encode(X[0])


def test_base_limit_threads_sets_and_restores_faiss_and_torch():
    import faiss
    import torch

    from recbole_psrq.quantization.base import limit_threads

    before = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(2)
    torch.set_num_threads(2)
    try:
        with limit_threads(1):
            assert faiss.omp_get_max_threads() == 1 and torch.get_num_threads() == 1
        assert faiss.omp_get_max_threads() == 2 and torch.get_num_threads() == 2
        with pytest.raises(RuntimeError):
            with limit_threads(1):
                raise RuntimeError
        assert faiss.omp_get_max_threads() == 2 and torch.get_num_threads() == 2
        with limit_threads(None):
            assert faiss.omp_get_max_threads() == 2 and torch.get_num_threads() == 2
        seen = []
        quantizer = build_quantizer("rq_kmeans", n_levels=2, codebook_size=4, niter=2)
        original = quantizer._fit
        quantizer._fit = lambda x: (seen.append((faiss.omp_get_max_threads(), torch.get_num_threads())),
                                    original(x))
        quantizer.fit(_small(20, 4))
        assert seen == [(1, 1)] and faiss.omp_get_max_threads() == 2
    finally:
        faiss.omp_set_num_threads(before[0])
        torch.set_num_threads(before[1])


def test_base_save_writes_the_config_the_dimension_and_one_array_per_codebook(tmp_path):
    import json

    X = _small(20, 4)
    quantizer = build_quantizer("rq_kmeans", n_levels=2, codebook_size=4, niter=2).fit(X)
    quantizer.save(tmp_path / "q.npz")
    with np.load(tmp_path / "q.npz") as arrays:
        assert sorted(arrays.files) == ["centroids_0", "centroids_1", "config"]
        config = json.loads(str(arrays["config"]))
        np.testing.assert_array_equal(arrays["centroids_1"], quantizer.centroids[1])
    assert config == {**quantizer.config, "dim": 4, "format_version": 1}
    fresh = build_quantizer("rq_kmeans", n_levels=2, codebook_size=4, niter=2)
    fresh.restore(np.int64(4), {f"centroids_{i}": c for i, c in enumerate(quantizer.centroids)})
    assert fresh.dim == 4 and type(fresh.dim) is int
    np.testing.assert_array_equal(fresh.encode(X), quantizer.encode(X))


from recbole_psrq.quantization.base import Quantizer as _BaseQuantizer  # noqa: E402


class _StubQuantizer(_BaseQuantizer):
    """Minimal subclass: all-zero codes; decode returns float64 in Fortran order and records the
    faiss thread count each hook runs with."""

    name = "stub"
    DEFAULT_LEVELS = 2
    seen = None

    def _fit(self, x):
        self.seen = []

    def _encode_chunk(self, x):
        import faiss
        self.seen.append(("encode", faiss.omp_get_max_threads()))
        return np.zeros((x.shape[0], self.n_levels), dtype=np.int64)

    def _decode(self, codes):
        import faiss
        self.seen.append(("decode", faiss.omp_get_max_threads()))
        return np.asfortranarray(np.ones((codes.shape[0], self.dim), dtype=np.float64))


def test_base_decode_returns_contiguous_float32_and_hooks_run_on_the_configured_threads():
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        quantizer = _StubQuantizer(codebook_size=2, threads=1).fit(_small(4, 3))
        codes = quantizer.encode(_small(4, 3))
        out = quantizer.decode(codes)
        assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"] and out.shape == (4, 3)
        assert quantizer.seen == [("encode", 1), ("decode", 1)]
        assert faiss.omp_get_max_threads() == 2
    finally:
        faiss.omp_set_num_threads(before)


def test_base_constructor_defaults_and_the_full_unfitted_message():
    from recbole_psrq.quantization import QUANTIZERS

    quantizer = QUANTIZERS["rq_kmeans"]()
    assert (quantizer.n_levels, quantizer.codebook_size, quantizer.seed) == (3, 256, 0)
    assert _StubQuantizer().n_levels == 2
    with pytest.raises(ConfigError, match=r"^Cannot encode: quantizer 'stub' is not fitted yet\. Call fit\(X\) "
                                          r"first or load a saved quantizer with load_quantizer\(path\)\.$"):
        _StubQuantizer(codebook_size=2).encode(_small(4, 3))


def test_base_training_sample_reads_x_itself_when_every_row_is_used(monkeypatch):
    X = _small(20, 3)
    quantizer = build_quantizer("rq_kmeans", codebook_size=2, seed=5)
    seen = []
    original = quantizer.preprocess
    monkeypatch.setattr(quantizer, "preprocess", lambda A: (seen.append(A is X), original(A))[1])
    quantizer._training_sample(X, 20)
    quantizer._training_sample(X, 30)
    assert seen == [True, True]  # no fancy-indexed copy of all N rows
