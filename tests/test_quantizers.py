"""Fast unit tests of the quantizers PQ / OPQ / VQ / RQ-VAE, build_quantizer / load_quantizer and the
SID quality report, against values computed in the test (issue 15, mutation testing; TESTING.md).

RQ-VAE's training loop is tested with a scripted reconstruction-error curve (``_evaluate`` replaced)
and with an identity encoder / decoder, so every value can be written out by hand."""
import json
import logging
import math

import faiss
import numpy as np
import pytest
import sklearn.metrics  # noqa: F401  (preloaded: the report imports it lazily; mutmut forks after this)
import torch

import recbole_psrq.quantization as quantization
from recbole_psrq.errors import ConfigError, DataFormatError
from recbole_psrq.quantization import QUANTIZERS, build_quantizer, load_quantizer, sid_quality_report
from recbole_psrq.quantization import report as report_module
from recbole_psrq.quantization import rq_vae as rq_vae_module
from recbole_psrq.quantization.kmeans import train_kmeans
from recbole_psrq.quantization.pq import OPQQuantizer, ProductQuantizer
from recbole_psrq.quantization.report import (knn_recall, numpy_normalized_mutual_info, purity,
                                              sid_warnings)
from recbole_psrq.quantization.residual import PSRQQuantizer, ResidualKMeansQuantizer
from recbole_psrq.quantization.rq_vae import (RQVAEQuantizer, _build_autoencoder, _nearest,
                                              _residual_quantize, codebook_usage)
from recbole_psrq.quantization.vq import VQQuantizer

# the first torch.optim.Adam costs ~4 s (lazy imports); pay it once here, before mutmut forks
torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])


def _points(n=40, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _normalised(X):
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def _nearest_np(points, centroids):
    return ((points[:, None, :] - centroids[None]) ** 2).sum(2).argmin(1)


# ---------------------------------------------------------------- build_quantizer / load_quantizer

def test_quantizers_registry_and_exports():
    assert QUANTIZERS == {"psrq": PSRQQuantizer, "rq_kmeans": ResidualKMeansQuantizer,
                          "rq_vae": RQVAEQuantizer, "vq": VQQuantizer, "pq": ProductQuantizer,
                          "opq": OPQQuantizer}
    assert quantization.__all__ == ["QUANTIZERS", "Quantizer", "build_quantizer", "load_quantizer",
                                    "sid_quality_report"]


def test_build_quantizer_defaults_and_passes_everything_on():
    q = build_quantizer("psrq")
    assert (q.n_levels, q.codebook_size, q.seed) == (3, 256, 0)
    assert build_quantizer("pq").n_levels == 4 and build_quantizer("vq").n_levels == 1
    q = build_quantizer("pq", n_levels=2, codebook_size=7, seed=5, niter=3)
    assert type(q) is ProductQuantizer
    assert (q.n_levels, q.codebook_size, q.seed, q.options["niter"]) == (2, 7, 5, 3)


def test_build_quantizer_unknown_name_word_for_word():
    with pytest.raises(ConfigError) as e:
        build_quantizer("kmeans")
    assert str(e.value) == ("Unknown quantizer 'kmeans'. Available quantizers: "
                            "['opq', 'pq', 'psrq', 'rq_kmeans', 'rq_vae', 'vq'].")


def test_load_quantizer_round_trip_keeps_every_setting(tmp_path):
    X = _points(30, 6)
    q = build_quantizer("pq", n_levels=3, codebook_size=4, seed=2, niter=5, chunk_size=7).fit(X)
    q.save(tmp_path / "q.npz")
    loaded = load_quantizer(tmp_path / "q.npz")
    assert type(loaded) is ProductQuantizer and loaded.config == q.config and loaded.dim == 6
    assert (loaded.n_levels, loaded.codebook_size, loaded.seed) == (3, 4, 2)
    np.testing.assert_array_equal(loaded.encode(X), q.encode(X))


def test_load_quantizer_errors_word_for_word(tmp_path):
    missing = tmp_path / "missing.npz"
    with pytest.raises(DataFormatError) as e:
        load_quantizer(missing)
    assert str(e.value).startswith(f"{missing}: not a readable quantizer file (")
    assert str(e.value).endswith(").") and isinstance(e.value.__cause__, OSError)
    # an object array needs pickle: refused (ValueError), never unpickled
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, config=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataFormatError, match=r"not a readable quantizer file \(.*allow_pickle") as e:
        load_quantizer(pickled)
    assert isinstance(e.value.__cause__, ValueError)
    no_config = tmp_path / "no_config.npz"
    np.savez(no_config, centroids_0=np.zeros((2, 2)))
    with pytest.raises(DataFormatError) as e:
        load_quantizer(no_config)
    assert str(e.value) == f"{no_config}: no 'config' entry; it was not written by Quantizer.save."
    for version, shown in ((2, "2"), (None, "None")):
        old = tmp_path / f"old{version}.npz"
        config = {"quantizer": "vq", "n_levels": 1, "codebook_size": 2, "seed": 0, "options": {},
                  "dim": 2}
        if version is not None:
            config["format_version"] = version
        np.savez(old, config=np.array(json.dumps(config)), centroids_0=np.zeros((2, 2)))
        with pytest.raises(DataFormatError) as e:
            load_quantizer(old)
        assert str(e.value) == (f"{old}: quantizer file format {shown}, this code reads 1; refit and "
                                "save the quantizer again.")


# ---------------------------------------------------------------- PQ / OPQ

def test_pq_subspaces():
    q = build_quantizer("pq", codebook_size=2)
    q.dim = 10
    assert q._subspaces() == [(0, 3), (3, 6), (6, 8), (8, 10)]
    q.dim = 8
    assert q._subspaces() == [(0, 2), (2, 4), (4, 6), (6, 8)]
    q = build_quantizer("pq", n_levels=3, codebook_size=2)
    q.dim = 3
    assert q._subspaces() == [(0, 1), (1, 2), (2, 3)]


def test_pq_needs_a_dimension_per_level_word_for_word():
    with pytest.raises(ConfigError) as e:
        build_quantizer("pq", codebook_size=2).fit(_points(10, 3))
    assert str(e.value) == ("Quantizer 'pq' splits the 3 embedding dimensions into n_levels=4 "
                            "sub-spaces; use n_levels <= 3.")
    build_quantizer("pq", n_levels=3, codebook_size=2).fit(_points(10, 3))  # d = L is fine


def test_pq_codebooks_codes_and_decode_by_hand():
    X = _points(40, 7)
    q = build_quantizer("pq", n_levels=3, codebook_size=4, seed=3, niter=6, nredo=2).fit(X)
    x = _normalised(X)
    bounds = [(0, 3), (3, 5), (5, 7)]
    assert len(q.centroids) == 3
    for level, (start, stop) in enumerate(bounds):  # k-means seed = seed + sub-space index
        np.testing.assert_array_equal(
            q.centroids[level], train_kmeans(x[:, start:stop], 4, 6, seed=3 + level, nredo=2))
    codes = q.encode(X)
    expected = np.stack([_nearest_np(x[:, a:b], q.centroids[level])
                         for level, (a, b) in enumerate(bounds)], 1)
    np.testing.assert_array_equal(codes, expected)
    assert codes.dtype == np.int64
    full = np.concatenate([q.centroids[level][codes[:, level]] for level in range(3)], 1)
    np.testing.assert_array_equal(q.decode(codes), full)
    partial = q.decode(codes, n_levels=2)
    np.testing.assert_array_equal(partial[:, :5], full[:, :5])
    assert not partial[:, 5:].any()


def test_pq_trains_on_the_seeded_sample():
    X = _points(60, 4)
    q = build_quantizer("pq", n_levels=2, codebook_size=3, max_train_points=10, niter=4).fit(X)
    sample = q._training_sample(X, 10)
    assert sample.shape == (10, 4)
    np.testing.assert_array_equal(q.centroids[0], train_kmeans(sample[:, :2], 3, 4, seed=0))
    np.testing.assert_array_equal(q.centroids[1], train_kmeans(sample[:, 2:], 3, 4, seed=1))


def test_opq_rotation_is_faiss_opq_on_the_sample_and_is_applied():
    X = _points(64, 8, seed=1)
    q = build_quantizer("opq", n_levels=2, codebook_size=5, seed=4, opq_niter=3, niter=5).fit(X)
    x = _normalised(X)
    # the same faiss OPQ written out: niter, all sample rows, inner PQ with ceil(log2 5) = 3 bits
    opq = faiss.OPQMatrix(8, 2)
    opq.niter = 3
    opq.max_train_points = 64
    inner = faiss.ProductQuantizer(8, 2, 3)
    inner.cp.seed = 4
    opq.pq = inner
    opq.train(x)
    rotation = faiss.vector_to_array(opq.A).reshape(8, 8).astype(np.float32)
    np.testing.assert_array_equal(q.rotation, rotation)
    assert q.rotation.dtype == np.float32 and q.rotation.shape == (8, 8)
    np.testing.assert_allclose(q.rotation @ q.rotation.T, np.eye(8), atol=1e-5)
    assert not np.allclose(q.rotation, np.eye(8), atol=1e-3)
    y = x @ rotation.T
    for level, (a, b) in enumerate([(0, 4), (4, 8)]):
        np.testing.assert_array_equal(q.centroids[level],
                                      train_kmeans(y[:, a:b], 5, 5, seed=4 + level))
    codes = q.encode(X)
    expected = np.stack([_nearest_np(y[:, 0:4], q.centroids[0]),
                         _nearest_np(y[:, 4:8], q.centroids[1])], 1)
    np.testing.assert_array_equal(codes, expected)
    rotated_back = np.concatenate([q.centroids[0][codes[:, 0]], q.centroids[1][codes[:, 1]]], 1)
    np.testing.assert_allclose(q.decode(codes), rotated_back @ rotation, atol=1e-6)


def test_opq_niter_matters_and_defaults_to_20():
    X = _points(64, 8, seed=1)
    one = build_quantizer("opq", n_levels=2, codebook_size=5, opq_niter=1).fit(X).rotation
    default = build_quantizer("opq", n_levels=2, codebook_size=5).fit(X).rotation
    assert build_quantizer("opq", codebook_size=5).options["opq_niter"] == 20
    assert not np.allclose(one, default)


def test_opq_options_and_messages_word_for_word():
    for bad in (0, True, 1.5):
        with pytest.raises(ConfigError) as e:
            build_quantizer("opq", opq_niter=bad)
        assert str(e.value) == f"Quantizer 'opq': opq_niter must be an integer >= 1, got {bad!r}."
    build_quantizer("opq", opq_niter=1)
    with pytest.raises(ConfigError, match="niter must be an integer >= 1"):
        build_quantizer("opq", niter=0)  # the PQ checks still run
    with pytest.raises(ConfigError) as e:
        build_quantizer("opq", n_levels=4, codebook_size=2).fit(_points(10, 10))
    assert str(e.value) == (
        "Quantizer 'opq' needs the embedding dimension (10) to be divisible by n_levels (4). Pick a "
        "divisor of 10 as n_levels, or use 'pq', which accepts uneven sub-spaces.")


def test_opq_save_load_keeps_the_rotation(tmp_path):
    X = _points(64, 8, seed=1)
    q = build_quantizer("opq", n_levels=2, codebook_size=5, opq_niter=2).fit(X)
    q.save(tmp_path / "opq.npz")
    with np.load(tmp_path / "opq.npz") as f:
        assert sorted(f.files) == ["centroids_0", "centroids_1", "config", "rotation"]
        np.testing.assert_array_equal(f["rotation"], q.rotation)
    loaded = load_quantizer(tmp_path / "opq.npz")
    np.testing.assert_array_equal(loaded.rotation, q.rotation)
    codes = q.encode(X)
    np.testing.assert_array_equal(loaded.decode(codes), q.decode(codes))


# ---------------------------------------------------------------- VQ

def test_vq_is_one_level_kmeans():
    X = _points(50, 5, seed=2)
    q = build_quantizer("vq", codebook_size=6, seed=7, niter=4).fit(X)
    x = _normalised(X)
    centroids = train_kmeans(x, 6, 4, seed=7)
    np.testing.assert_array_equal(q.centroids[0], centroids)
    np.testing.assert_array_equal(q.encode(X), _nearest_np(x, centroids)[:, None])
    assert build_quantizer("vq", n_levels=1).n_levels == 1


def test_vq_messages_word_for_word():
    with pytest.raises(ConfigError) as e:
        build_quantizer("vq", n_levels=2)
    assert str(e.value) == ("Quantizer 'vq' has exactly one level, got n_levels=2. Omit n_levels or "
                            "set it to 1 (use 'rq_kmeans' or 'psrq' for several levels).")
    with pytest.raises(ConfigError, match="niter must be an integer >= 1"):
        build_quantizer("vq", niter=0)  # the k-means checks still run


# ---------------------------------------------------------------- RQ-VAE: pieces by hand

def test_build_autoencoder_layout():
    net = _build_autoencoder(6, [5, 4], 3)
    describe = [(type(m).__name__, getattr(m, "in_features", None), getattr(m, "out_features", None))
                for m in (*net.encoder, *net.decoder)]
    assert describe == [("Linear", 6, 5), ("ReLU", None, None), ("Linear", 5, 4),
                        ("ReLU", None, None), ("Linear", 4, 3),
                        ("Linear", 3, 4), ("ReLU", None, None), ("Linear", 4, 5),
                        ("ReLU", None, None), ("Linear", 5, 6)]
    assert len(net.encoder) == 5 and len(net.decoder) == 5
    plain = _build_autoencoder(2, [], 1)
    assert [type(m).__name__ for m in (*plain.encoder, *plain.decoder)] == ["Linear", "Linear"]


def test_nearest_by_hand():
    residual = torch.tensor([[0.0, 0.0], [2.9, 0.0], [1.4, 1.0], [-5.0, 0.0]])
    codebook = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 1.0]])
    assert _nearest(residual, codebook).tolist() == [0, 1, 2, 0]
    # 1 from (0, 0), 1.1 from (2.1, 0): the squared distances, not ||c||^2 - 3 r.c, decide
    assert _nearest(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0], [2.1, 0.0]])).tolist() == [0]


def test_residual_quantize_values_and_gradients_by_hand():
    beta = 0.25
    latent = torch.tensor([[0.0], [3.0]], requires_grad=True)
    codebooks = torch.tensor([[[0.0], [2.0]], [[0.75], [-0.25]]], requires_grad=True)
    quantized, codes, loss = _residual_quantize(latent, codebooks, beta)
    # level 1: codes 0, 1 (chosen 0, 2), residuals 0, 1; level 2: codes 1, 0 (chosen -0.25, 0.75)
    assert codes.tolist() == [[0, 1], [1, 0]] and codes.dtype == torch.int64
    assert quantized.detach().tolist() == [[-0.25], [2.75]]
    # level 1 mse = (0 + 1) / 2 = 0.5; level 2: (0.25^2 + 0.25^2) / 2 = 0.0625
    assert loss.item() == pytest.approx((1 + beta) * 0.5 + (1 + beta) * 0.0625)
    loss.backward()
    # latent: beta * d mse(latent, c1) + beta * d mse(latent - c1, c2) = beta * (r1 - c1 + r2 - c2)
    np.testing.assert_allclose(latent.grad.numpy(), [[beta * (0 + 0.25)], [beta * (1 + 0.25)]])
    # codewords: d mse(c, r) = (c - r) for the row that chose them (mean over 2 rows: 2 / 2)
    np.testing.assert_allclose(codebooks.grad.numpy(), [[[0.0], [-1.0]], [[-0.25], [-0.25]]])


def test_codebook_usage_by_hand():
    codes = np.array([[0, 1], [0, 1], [1, 1], [3, 1]])
    usage = codebook_usage(codes, 4)
    assert usage["used_codes"] == [3, 1] and usage["used_share"] == [0.75, 0.25]
    p = np.array([0.5, 0.25, 0.25])
    assert usage["perplexity"][0] == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert usage["perplexity"][1] == pytest.approx(1.0)
    assert all(type(v) is int for v in usage["used_codes"])
    assert all(type(v) is float for v in usage["perplexity"])


class _Identity(torch.nn.Module):
    def forward(self, x):
        return x


def _identity_rq_vae(codebooks, chunk_size=8192, **options):
    """An RQ-VAE whose encoder and decoder are the identity, with the given codebooks (L, k, d)."""
    codebooks = np.asarray(codebooks, dtype=np.float32)
    q = build_quantizer("rq_vae", n_levels=codebooks.shape[0], codebook_size=codebooks.shape[1],
                        chunk_size=chunk_size, **options)
    q.dim = codebooks.shape[2]
    q.net = torch.nn.Module()
    q.net.encoder, q.net.decoder = _Identity(), _Identity()
    q.codebooks = codebooks
    return q


CODEBOOKS = [[[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]], [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]]
ROWS = np.array([[0.1, 0.0], [4.0, 0.9], [5.2, 0.1], [0.2, 3.8], [0.0, 0.3]], dtype=np.float32)


def test_rq_vae_evaluate_mse_and_counts_by_hand_in_chunks():
    for chunk in (2, 100):
        q = _identity_rq_vae(CODEBOOKS, chunk_size=chunk)
        mse, counts = q._evaluate(torch.from_numpy(ROWS), torch.tensor(CODEBOOKS))
        # codes: (0,0) (1,2) (1,1) (2,0) (0,0); reconstructions (0,0) (4,1) (5,0) (0,4) (0,0)
        errors = [0.01, 0.01, 0.04 + 0.01, 0.04 + 0.04, 0.09]
        assert mse == pytest.approx(sum(errors) / 5, rel=1e-5)
        assert counts.tolist() == [[2, 2, 1], [3, 1, 1]] and counts.dtype == np.int64


def test_rq_vae_encode_and_decode_with_an_identity_net():
    q = _identity_rq_vae(CODEBOOKS, chunk_size=2, normalize=False)
    codes = q.encode(ROWS)
    assert codes.tolist() == [[0, 0], [1, 2], [1, 1], [2, 0], [0, 0]] and codes.dtype == np.int64
    np.testing.assert_array_equal(q.decode(codes),
                                  [[0, 0], [4, 1], [5, 0], [0, 4], [0, 0]])
    np.testing.assert_array_equal(q.decode(codes, n_levels=1),
                                  [[0, 0], [4, 0], [4, 0], [0, 4], [0, 0]])
    empty = q.decode(np.zeros((0, 2), dtype=np.int64))
    assert empty.shape == (0, 2) and empty.dtype == np.float32


def test_rq_vae_init_codebooks_are_residual_kmeans_on_the_latents():
    q = _identity_rq_vae(np.zeros((2, 3, 2)), niter=4, nredo=2, seed=5)
    rows = _points(30, 2, seed=3)
    codebooks = q._init_codebooks(torch.from_numpy(rows))
    first = train_kmeans(rows, 3, 4, seed=5, nredo=2)
    residual = rows - first[_nearest_np(rows, first)]
    second = train_kmeans(residual, 3, 4, seed=6, nredo=2)
    np.testing.assert_allclose(codebooks, np.stack([first, second]), rtol=1e-6, atol=1e-6)
    assert codebooks.shape == (2, 3, 2)


def test_rq_vae_revives_dead_codes_to_level_residuals_of_drawn_rows():
    q = _identity_rq_vae(CODEBOOKS)
    sample = torch.from_numpy(ROWS)
    codebooks = torch.nn.Parameter(torch.tensor(CODEBOOKS))
    optimizer = torch.optim.Adam([codebooks], lr=0.1)
    codebooks.grad = torch.ones_like(codebooks)
    optimizer.step()  # Adam moments exist, all non-zero
    before = codebooks.detach().clone()
    counts = np.array([[3, 0, 2], [0, 5, 0]])
    revived = q._revive_dead_codes(sample, codebooks, counts, optimizer,
                                   torch.Generator().manual_seed(9))
    assert revived == [1, 2]
    # the draws: one permutation per level, cut to the number of dead codes
    generator = torch.Generator().manual_seed(9)
    rows = [torch.randperm(5, generator=generator)[:n] for n in (1, 2)]
    level1 = ROWS[rows[0].numpy()]  # level-1 residual = the latent itself
    latents2 = ROWS[rows[1].numpy()]
    level2 = latents2 - before[0].numpy()[_nearest_np(latents2, before[0].numpy())]
    expected = before.clone()
    expected[0, 1] = torch.from_numpy(level1[0])
    expected[1, 0], expected[1, 2] = torch.from_numpy(level2[0]), torch.from_numpy(level2[1])
    torch.testing.assert_close(codebooks.detach(), expected)
    state = optimizer.state[codebooks]
    for moment in ("exp_avg", "exp_avg_sq"):
        zero = state[moment] == 0
        assert zero[0, 1].all() and zero[1, 0].all() and zero[1, 2].all()
        assert not zero[0, 0].any() and not zero[0, 2].any() and not zero[1, 1].any()
    # no dead code: nothing changes and no draw is made
    generator = torch.Generator().manual_seed(9)
    assert q._revive_dead_codes(sample, codebooks, np.ones((2, 3), int), optimizer,
                                generator) == [0, 0]
    torch.testing.assert_close(codebooks.detach(), expected)
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(9).get_state())
    # an optimizer without moments yet (no step taken) is fine
    fresh = torch.nn.Parameter(torch.tensor(CODEBOOKS))
    assert q._revive_dead_codes(sample, fresh, counts, torch.optim.Adam([fresh]),
                                torch.Generator().manual_seed(9)) == [1, 2]


# ---------------------------------------------------------------- RQ-VAE: options

TINY = dict(codebook_size=2, hidden_dims=[3], latent_dim=2, batch_size=4, epochs=1)


def test_rq_vae_option_defaults():
    options = build_quantizer("rq_vae").options
    assert {key: options[key] for key in ("hidden_dims", "latent_dim", "epochs", "patience",
                                          "min_delta", "revive_dead_codes", "batch_size", "lr",
                                          "beta", "niter", "nredo", "max_train_points")} == {
        "hidden_dims": [512, 256], "latent_dim": 64, "epochs": 200, "patience": 10,
        "min_delta": 1e-3, "revive_dead_codes": True, "batch_size": 1024, "lr": 1e-3,
        "beta": 0.25, "niter": 20, "nredo": 1, "max_train_points": None}


@pytest.mark.parametrize("hidden", [5, [4, 0], [4, 2.0], "12", None, [-1]])
def test_rq_vae_hidden_dims_message_word_for_word(hidden):
    with pytest.raises(ConfigError) as e:
        build_quantizer("rq_vae", hidden_dims=hidden)
    assert str(e.value) == ("Quantizer 'rq_vae': hidden_dims must be a list of positive integers, "
                            f"got {hidden!r}.")


def test_rq_vae_hidden_dims_accepts_lists_tuples_numpy_ints_and_no_hidden_layer():
    for hidden in ([1], (4, 2), [np.int64(3)], []):
        q = build_quantizer("rq_vae", hidden_dims=hidden)
        assert q.options["hidden_dims"] == [int(h) for h in hidden]
        assert all(type(h) is int for h in q.options["hidden_dims"])
        assert type(q.options["hidden_dims"]) is list


@pytest.mark.parametrize("option", ["latent_dim", "epochs", "batch_size", "patience"])
def test_rq_vae_integer_options_word_for_word(option):
    build_quantizer("rq_vae", **{option: 1})
    for bad in (0, 2.0, True):
        with pytest.raises(ConfigError) as e:
            build_quantizer("rq_vae", **{option: bad})
        assert str(e.value) == f"Quantizer 'rq_vae': {option} must be an integer >= 1, got {bad!r}."


@pytest.mark.parametrize("option", ["lr", "beta"])
def test_rq_vae_positive_numbers_word_for_word(option):
    for good in (1, 0.5, 1e-9):
        assert build_quantizer("rq_vae", **{option: good}).options[option] == good
    for bad in (0, -1.0, True, False, "1", None):
        with pytest.raises(ConfigError) as e:
            build_quantizer("rq_vae", **{option: bad})
        assert str(e.value) == f"Quantizer 'rq_vae': {option} must be a number > 0, got {bad!r}."


def test_rq_vae_min_delta_and_revive_word_for_word():
    for good in (0, 0.0, 0.5, 0.999):
        build_quantizer("rq_vae", min_delta=good)
    for bad in (-0.1, 1, 1.0, True, False, "0.1", None):
        with pytest.raises(ConfigError) as e:
            build_quantizer("rq_vae", min_delta=bad)
        assert str(e.value) == ("Quantizer 'rq_vae': min_delta (a relative improvement) must be a "
                                f"number in [0, 1), got {bad!r}.")
    build_quantizer("rq_vae", revive_dead_codes=False)
    for bad in (1, "yes", None):
        with pytest.raises(ConfigError) as e:
            build_quantizer("rq_vae", revive_dead_codes=bad)
        assert str(e.value) == ("Quantizer 'rq_vae': revive_dead_codes must be true or false, got "
                                f"{bad!r}.")
    with pytest.raises(ConfigError, match="niter must be an integer >= 1"):
        build_quantizer("rq_vae", niter=0)  # the k-means checks still run


# ---------------------------------------------------------------- RQ-VAE: the training loop

class _Script:
    """Replaces ``_evaluate`` with a scripted MSE curve (all codes used), records the state each epoch
    ends with, and records the revival calls (returning scripted counts)."""

    def __init__(self, curve, revived=None):
        self.curve, self.revived = list(curve), revived
        self.states, self.revive_calls, self.samples, self.generators = [], [], [], []

    def install(self, monkeypatch):
        script = self

        def evaluate(quantizer, sample, codebooks):
            script.samples.append(sample)
            script.states.append((json.dumps({k: v.tolist() for k, v in
                                              quantizer.net.state_dict().items()}),
                                  codebooks.detach().clone()))
            counts = np.ones((quantizer.n_levels, quantizer.codebook_size), dtype=np.int64)
            return script.curve[len(script.states) - 1], counts

        def revive(quantizer, sample, codebooks, counts, optimizer, generator):
            script.revive_calls.append((len(script.states), optimizer, counts, codebooks))
            script.generators.append((generator, generator.get_state().clone()))
            return list(script.revived) if script.revived else [0] * quantizer.n_levels

        monkeypatch.setattr(RQVAEQuantizer, "_evaluate", evaluate)
        monkeypatch.setattr(RQVAEQuantizer, "_revive_dead_codes", revive)
        return self


def _net_json(quantizer):
    return json.dumps({k: v.tolist() for k, v in quantizer.net.state_dict().items()})


X_SMALL = _points(12, 4, seed=5)


def test_rq_vae_stops_after_patience_epochs_without_a_relative_improvement(monkeypatch):
    # min_delta 0.5: an epoch improves only if mse < 0.5 * the last improving mse (strictly)
    script = _Script([1.0, 0.6, 0.5, 0.26, 0.2, 0.13, 0.14, 0.1, 0.05]).install(monkeypatch)
    q = build_quantizer("rq_vae", **{**TINY, "epochs": 20, "patience": 3, "min_delta": 0.5})
    q.fit(X_SMALL)
    summary = q.training_summary
    # epoch 1 improves (ref 1.0); 2, 3 stale (0.5 is not < 0.5); 4 improves (ref 0.26); 5, 6, 7
    # stale (0.13 = 0.5 * 0.26 is not below) -> stop after epoch 7; best = 0.13 at epoch 6
    assert summary["epochs_run"] == 7 and summary["max_epochs"] == 20
    assert summary["best_epoch"] == 6 and summary["recon_mse"] == 0.13
    assert summary["recon_mse_per_epoch"] == [1.0, 0.6, 0.5, 0.26, 0.2, 0.13, 0.14]
    assert summary["stop_reason"] == ("no relative improvement of at least 0.5 in the "
                                      "reconstruction MSE for 3 epochs")
    assert summary["revived_codes"] == [0, 0, 0]
    assert isinstance(summary["train_seconds"], float) and 0 <= summary["train_seconds"] < 600
    assert set(summary) == {"epochs_run", "max_epochs", "best_epoch", "stop_reason", "recon_mse",
                            "revived_codes", "recon_mse_per_epoch", "train_seconds"}
    # revival runs after every epoch but the stopping one
    assert [call[0] for call in script.revive_calls] == [1, 2, 3, 4, 5, 6]


def test_rq_vae_patience_one_and_min_delta_zero(monkeypatch):
    _Script([1.0, 0.9, 0.9, 0.5]).install(monkeypatch)
    q = build_quantizer("rq_vae", **{**TINY, "epochs": 10, "patience": 1, "min_delta": 0})
    q.fit(X_SMALL)
    # min_delta 0: any decrease improves; an equal value is stale -> stop at epoch 3
    assert q.training_summary["epochs_run"] == 3 and q.training_summary["best_epoch"] == 2
    assert q.training_summary["stop_reason"].endswith("at least 0 in the reconstruction MSE for 1 "
                                                      "epochs")


def test_rq_vae_runs_to_the_maximum_and_keeps_the_first_best_epoch(monkeypatch):
    script = _Script([0.5, 0.7, 0.5, 0.9], revived=[2, 1, 0]).install(monkeypatch)
    q = build_quantizer("rq_vae", **{**TINY, "epochs": 4, "patience": 4, "min_delta": 0.0})
    q.fit(X_SMALL)
    summary = q.training_summary
    assert summary["epochs_run"] == 4 and summary["stop_reason"] == "reached the maximum of 4 epochs"
    assert summary["best_epoch"] == 1 and summary["recon_mse"] == 0.5  # a tie does not replace it
    # revived after epochs 1-3, not after the last one
    assert [call[0] for call in script.revive_calls] == [1, 2, 3]
    assert summary["revived_codes"] == [6, 3, 0]
    assert all(type(n) is int for n in summary["revived_codes"])
    # the fitted net and codebooks are those the best epoch ended with
    best_net, best_codebooks = script.states[0]
    assert _net_json(q) == best_net and _net_json(q) != script.states[-1][0]
    np.testing.assert_array_equal(q.codebooks, best_codebooks.numpy())
    assert not np.array_equal(q.codebooks, script.states[-1][1].numpy())
    assert q.codebooks.dtype == np.float32


def test_rq_vae_restores_a_middle_best_epoch(monkeypatch):
    script = _Script([0.9, 0.3, 0.6, 0.8]).install(monkeypatch)
    q = build_quantizer("rq_vae", **{**TINY, "epochs": 4, "patience": 5})
    q.fit(X_SMALL)
    assert q.training_summary["best_epoch"] == 2 and q.training_summary["recon_mse"] == 0.3
    assert _net_json(q) == script.states[1][0]
    np.testing.assert_array_equal(q.codebooks, script.states[1][1].numpy())


def test_rq_vae_without_revival_never_revives(monkeypatch):
    script = _Script([1.0, 0.5, 0.2]).install(monkeypatch)
    q = build_quantizer("rq_vae", **{**TINY, "epochs": 3, "revive_dead_codes": False})
    q.fit(X_SMALL)
    assert script.revive_calls == [] and q.training_summary["revived_codes"] == [0, 0, 0]


def test_rq_vae_training_inputs_optimizer_and_init_rows(monkeypatch):
    script = _Script([1.0, 0.5, 0.4]).install(monkeypatch)
    init_rows = []
    original = RQVAEQuantizer._init_codebooks

    def init(quantizer, rows):
        init_rows.append(rows.clone())
        return original(quantizer, rows)

    monkeypatch.setattr(RQVAEQuantizer, "_init_codebooks", init)
    X = _points(40, 4, seed=6)
    q = build_quantizer("rq_vae", **{**TINY, "codebook_size": 3, "batch_size": 5, "epochs": 2,
                                     "max_train_points": 30, "lr": 0.01, "n_levels": 2})
    q.fit(X)
    sample = q._training_sample(X, 30)
    assert len(script.samples[0]) == 30
    np.testing.assert_array_equal(script.samples[0].numpy(), sample)
    # the codebooks start from max(batch_size, k) = 5 distinct sample rows
    assert init_rows[0].shape == (5, 4)
    matches = [int(np.flatnonzero((sample == row).all(1))[0]) for row in init_rows[0].numpy()]
    assert len(set(matches)) == 5
    _, optimizer, counts, codebooks = script.revive_calls[0]
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.01
    params = optimizer.param_groups[0]["params"]
    assert params[-1] is codebooks and len(params) == len(list(q.net.parameters())) + 1
    assert counts.shape == (2, 3)
    # the revival draws come from the fit's own generator, seeded with the quantizer's seed
    generator, state = script.generators[0]
    assert isinstance(generator, torch.Generator) and generator.initial_seed() == 0
    # one generator: the codebook-init rows, then epoch 1's batch order, then the revival draws
    expected = torch.Generator().manual_seed(0)
    torch.randperm(30, generator=expected)
    torch.randperm(30, generator=expected)
    assert torch.equal(state, expected.get_state())
    q2 = build_quantizer("rq_vae", **{**TINY, "codebook_size": 6, "batch_size": 2, "epochs": 1})
    q2.fit(X)
    assert init_rows[-1].shape == (6, 4)


def test_rq_vae_fit_keeps_the_callers_torch_rng_and_logs(monkeypatch, caplog):
    _Script([1.0, 0.5]).install(monkeypatch)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with caplog.at_level(logging.DEBUG, logger="recbole_psrq.quantization.rq_vae"):
        q = build_quantizer("rq_vae", **{**TINY, "epochs": 2, "n_levels": 2}).fit(X_SMALL)
    assert torch.equal(torch.rand(3), expected)
    messages = [r.getMessage() for r in caplog.records if r.name == "recbole_psrq.quantization.rq_vae"]
    assert any(m.startswith("rq_vae epoch 2/2: loss ") and "recon MSE 0.50000 (best 0.50000 at "
               "epoch 2), codes used per level [2, 2], revived [0, 0], in " in m for m in messages)
    assert ("rq_vae trained 2 epochs (reached the maximum of 2 epochs); kept epoch 2, recon MSE "
            "0.50000 on 12 training rows; revived dead codes per level [0, 0]") in messages
    usage = q.codebook_usage
    line = ("rq_vae codebook usage on the fit data: used share "
            + " / ".join(f"{u:.3f}" for u in usage["used_share"]) + ", perplexity "
            + " / ".join(f"{p:.1f}" for p in usage["perplexity"]))
    assert line in messages
    assert usage == codebook_usage(q.encode(X_SMALL), 2)


def test_rq_vae_tiny_real_fit_is_seeded_and_round_trips(tmp_path):
    options = {**TINY, "epochs": 3, "n_levels": 2, "patience": 3}
    first = build_quantizer("rq_vae", **options).fit(X_SMALL)
    second = build_quantizer("rq_vae", **options).fit(X_SMALL)
    np.testing.assert_array_equal(first.codebooks, second.codebooks)
    assert _net_json(first) == _net_json(second)
    other = build_quantizer("rq_vae", **{**options, "seed": 1}).fit(X_SMALL)
    assert not np.array_equal(other.codebooks, first.codebooks)
    # the summary's MSE is the quantised-path reconstruction error of the kept model
    codes = first.encode(X_SMALL)
    x = _normalised(X_SMALL)
    mse = float(((first.decode(codes) - x) ** 2).sum(1).mean())
    assert first.training_summary["recon_mse"] == pytest.approx(mse, rel=1e-5)
    first.save(tmp_path / "q.npz")
    with np.load(tmp_path / "q.npz") as f:
        assert sorted(f.files) == sorted(
            ["config", "codebooks", "codebook_usage", "training_summary"]
            + [f"net.{k}" for k in first.net.state_dict()])
        assert json.loads(str(f["codebook_usage"])) == first.codebook_usage
    loaded = load_quantizer(tmp_path / "q.npz")
    assert loaded.training_summary == first.training_summary
    assert loaded.codebook_usage == first.codebook_usage
    np.testing.assert_array_equal(loaded.codebooks, first.codebooks)
    np.testing.assert_array_equal(loaded.decode(codes), first.decode(codes))
    np.testing.assert_array_equal(loaded.encode(X_SMALL), codes)
    # without usage / summary (None) neither entry is written
    first.codebook_usage = first.training_summary = None
    first.save(tmp_path / "bare.npz")
    with np.load(tmp_path / "bare.npz") as f:
        assert "codebook_usage" not in f.files and "training_summary" not in f.files


def test_rq_vae_beta_is_the_commitment_weight(monkeypatch):
    seen = []
    original = rq_vae_module._residual_quantize

    def spy(latent, codebooks, beta):
        seen.append(beta)
        return original(latent, codebooks, beta)

    monkeypatch.setattr(rq_vae_module, "_residual_quantize", spy)
    q = build_quantizer("rq_vae", **{**TINY, "beta": 0.75, "epochs": 1}).fit(X_SMALL)
    assert seen and set(seen) == {0.75}
    q.encode(X_SMALL)
    assert set(seen) == {0.75}


# ---------------------------------------------------------------- report

class _Lookup:
    """Decodes level l of a code to ``tables[l][code]`` (1-D points); no normalisation."""

    name = "lookup"

    def __init__(self, tables, codebook_size=None, chunk_size=100, prefix_weights=None):
        self.tables = [np.asarray(t, dtype=np.float32) for t in tables]
        self.options = {"chunk_size": chunk_size, "threads": None}
        self.codebook_size = codebook_size
        if prefix_weights is not None:
            self.prefix_weights = prefix_weights
        self.preprocessed = []

    def preprocess(self, X):
        self.preprocessed.append(len(X))
        return np.asarray(X, dtype=np.float32) * 1.0

    def decode(self, codes, n_levels=None):
        used = codes.shape[1] if n_levels is None else n_levels
        return sum(self.tables[l][codes[:, l]] for l in range(used))[:, None]


def test_report_reconstruction_by_levels_by_hand_in_chunks():
    X = np.array([[1.0], [2.0], [6.0]], dtype=np.float32)
    codes = np.array([[0, 1], [0, 0], [1, 1]])
    for chunk in (1, 2, 100):
        q = _Lookup([[1.5, 5.0], [0.0, -0.5]], codebook_size=2, chunk_size=chunk)
        report = sid_quality_report(X, codes, quantizer=q, knn_sample=3, knn_k=1)
        # level 1: 1.5, 1.5, 5 -> errors .25 .25 1; levels 1-2: 1, 1.5, 4.5 -> 0 .25 2.25
        assert report["recon_mse_by_levels"] == pytest.approx([1.5 / 3, 2.5 / 3])
        assert report["recon_mse"] == report["recon_mse_by_levels"][-1]
        assert report["codebook_size"] == 2 and report["utilization"] == [1.0, 1.0]


def test_report_top_level_fields_and_codebook_size_sources(monkeypatch):
    codes = np.array([[0, 1], [0, 1], [2, 0], [3, 1]], dtype=np.int32)
    report = sid_quality_report(None, codes)
    assert report["n_items"] == 4 and report["n_levels"] == 2 and report["codebook_size"] is None
    assert report["utilization"] == [None, None]
    assert type(report["n_items"]) is int and type(report["unique_sids"]) is int
    assert report["unique_sids"] == 3 and report["collision_rate"] == 0.25
    assert report["max_items_per_sid"] == 2 and type(report["max_items_per_sid"]) is int
    assert report["distinct_sid_share"] == 0.75
    assert report["nmi_level1"][0] == 1.0 and report["nmi_level1"][1] == pytest.approx(
        sklearn.metrics.normalized_mutual_info_score(codes[:, 1], codes[:, 0]))
    assert "prefix_weights" not in report and "labelled_items" not in report
    assert report["warning_thresholds"] == {"nmi_level1": 0.9, "distinct_sid_share": 0.5}
    assert sid_quality_report(None, np.zeros((4, 1), int), codebook_size=2)["warnings"] == [
        "SID: only 1 distinct full SIDs for 4 items (share 0.250 < 0.5); up to 4 items share one "
        "SID and cannot be told apart by it. Try a larger codebook (now 2), or more levels (now 1)."]
    assert sid_quality_report(None, codes, codebook_size=np.int64(8))["utilization"] == [3 / 8, 2 / 8]
    assert type(sid_quality_report(None, codes, codebook_size=np.int64(8))["codebook_size"]) is int
    # with a quantizer: its codebook_size unless one is given; knn settings passed on
    calls = []
    monkeypatch.setattr(report_module, "knn_recall",
                        lambda *args: calls.append(args) or 0.5)
    X = np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float32)
    q = _Lookup([[0, 1, 2, 3], [0, 0]], codebook_size=4, prefix_weights=[None, np.float32(0.5)])
    report = sid_quality_report(X, codes, quantizer=q, knn_sample=3, knn_k=2, seed=7)
    assert report["codebook_size"] == 4 and report["utilization"] == [0.75, 0.5]
    assert report["knn_recall@2"] == 0.5 and "knn_recall@10" not in report
    assert calls[0][0] is X and calls[0][2:] == (q, 3, 2, 7)
    np.testing.assert_array_equal(calls[0][1], codes)
    assert report["prefix_weights"] == [None, 0.5] and type(report["prefix_weights"][1]) is float
    assert sid_quality_report(X, codes, quantizer=q, codebook_size=16)["codebook_size"] == 16
    without = sid_quality_report(None, codes, knn_k=3)
    assert without["knn_recall@3"] is None and without["recon_mse"] is None


def test_report_embedding_rows_must_match_word_for_word():
    q = _Lookup([[0.0, 1.0]], codebook_size=2)
    with pytest.raises(DataFormatError) as e:
        sid_quality_report(np.zeros((3, 1), np.float32), np.zeros((2, 1), int), quantizer=q)
    assert str(e.value) == ("sid_quality_report: 3 embedding rows but 2 code rows; pass the codes of "
                            "exactly these embeddings.")
    with pytest.raises(DataFormatError, match="^sid_quality_report: embeddings must be a 2-D"):
        sid_quality_report(np.zeros(2, np.float32), np.zeros((2, 1), int), quantizer=q)


def test_report_codes_checks_word_for_word():
    for bad, shape, dtype in ((np.zeros(3, int), (3,), "int64"), (np.zeros((0, 2), int), (0, 2),
                                                                  "int64"),
                              (np.zeros((2, 2)), (2, 2), "float64")):
        with pytest.raises(DataFormatError) as e:
            sid_quality_report(None, bad)
        assert str(e.value) == ("sid_quality_report: codes must be a non-empty integer matrix (N, "
                                f"levels), got dtype {dtype} with shape {shape}.")
    with pytest.raises(DataFormatError) as e:
        sid_quality_report(None, np.array([[0], [-1]]))
    assert str(e.value) == "sid_quality_report: codes must be >= 0."
    assert sid_quality_report(None, [[0], [1]])["n_items"] == 2  # lists are fine; 0 is allowed
    one = sid_quality_report(None, np.array([[3, 1]], dtype=np.uint8))  # one item is fine
    assert one["n_items"] == 1 and one["unique_sids"] == 1 and one["collision_rate"] == 0.0


def test_report_label_metrics_by_hand():
    codes = np.array([[0, 0], [0, 1], [1, 1], [1, 1], [2, 0]])
    labels = ["a", "a", None, "b", 3]
    report = sid_quality_report(None, codes, labels=labels)
    known = [0, 1, 3, 4]
    names = np.array(["a", "a", "b", "3"])
    assert report["labelled_items"] == 4 and type(report["labelled_items"]) is int
    for level in range(2):
        assert report["nmi_labels"][level] == pytest.approx(
            sklearn.metrics.normalized_mutual_info_score(names, codes[known, level]))
    # level 1 clusters {0,1}: a a; {3}: b; {4}: 3 -> pure; level 2 {0,4}: a 3; {1,3}: a b -> 2/4
    assert report["purity_labels"] == [1.0, 0.5]
    for bad in (["a"] * 4, [["a"]] * 5):
        with pytest.raises(DataFormatError) as e:
            sid_quality_report(None, codes, labels=bad)
        shape = np.asarray(bad, dtype=object).shape
        assert str(e.value) == ("sid_quality_report: labels must be one per item (5), got shape "
                                f"{shape}.")
    with pytest.raises(DataFormatError) as e:
        sid_quality_report(None, codes, labels=[None] * 5)
    assert str(e.value) == "sid_quality_report: every label is None; pass at least one label."
    # labels that are numbers are compared as text: 1 and "1" are one class
    mixed = sid_quality_report(None, np.array([[0], [0], [1]]), labels=[1, "1", 2])
    assert mixed["purity_labels"] == [1.0] and mixed["nmi_labels"] == [pytest.approx(1.0)]


def test_numpy_nmi_by_hand():
    expected = (2 / 3 * math.log(2)) / ((math.log(2) + math.log(3)) / 2)
    assert numpy_normalized_mutual_info([5, 5, 5, 9, 9, 9], ["x", "x", "y", "y", "z", "z"]) == \
        pytest.approx(expected)
    assert numpy_normalized_mutual_info([3, 3, 3], [1, 1, 1]) == 1.0
    assert numpy_normalized_mutual_info([0, 0, 1, 1], [5, 5, 5, 5]) == 0.0
    assert numpy_normalized_mutual_info([7, 7], [2, 3]) == 0.0
    assert numpy_normalized_mutual_info([0, 1, 2, 3], [9, 8, 7, 6]) == pytest.approx(1.0)
    assert numpy_normalized_mutual_info([0, 1, 2], [5, 5, 5]) == 0.0
    assert numpy_normalized_mutual_info([0, 0, 1, 1], [0, 1, 0, 1]) == 0.0
    value = numpy_normalized_mutual_info([0, 1], [0, 1])
    assert type(value) is float and value == pytest.approx(1.0)
    # asymmetric joint table: the pairs must be decoded with the right base
    a, b = [0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 0, 1]
    assert numpy_normalized_mutual_info(a, b) == pytest.approx(
        sklearn.metrics.normalized_mutual_info_score(a, b), abs=1e-12)


def test_nmi_falls_back_to_numpy_without_sklearn(monkeypatch):
    monkeypatch.setattr(report_module, "_sklearn_nmi", lambda: None)
    assert report_module.normalized_mutual_info([0, 0, 1], [0, 0, 0]) == 0.0
    assert report_module.normalized_mutual_info([3, 3], [1, 1]) == 1.0
    monkeypatch.undo()
    assert report_module._sklearn_nmi() is sklearn.metrics.normalized_mutual_info_score
    assert report_module.normalized_mutual_info([3, 3], [1, 1]) == 1.0
    assert type(report_module.normalized_mutual_info([0, 1], [0, 1])) is float


def test_purity_by_hand():
    assert purity([5, 5, 9, 9, 9], ["a", "b", "c", "c", "a"]) == pytest.approx((1 + 2) / 5)
    assert purity([2, 2, 2], [1, 1, 1]) == 1.0
    assert purity([0, 1, 2], ["x", "y", "x"]) == 1.0
    assert purity([0, 0, 0, 0], ["a", "b", "b", "c"]) == 0.5
    assert type(purity([0], ["a"])) is float


def test_perplexity_and_entropy_by_hand():
    assert report_module._perplexity(np.array([0, 0, 1, 3])) == pytest.approx(
        math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))))
    assert report_module._entropy(np.array([0.5, 0.0, 0.5])) == pytest.approx(math.log(2))


def test_warnings_thresholds_and_hints_word_for_word():
    base = {"n_levels": 3, "nmi_level1": [1.0, 0.9, 0.95], "distinct_sid_share": 0.5,
            "unique_sids": 5, "n_items": 10, "max_items_per_sid": 3, "codebook_size": 4}
    # level 2 at exactly the threshold does not warn, level 3 above does; share 0.5 is not below
    assert sid_warnings(base, "x") == [
        "x level 3: NMI with the level-1 codes is 0.950 > 0.9, so its codes are nearly a function of "
        "level 1 and add little information. Try fewer levels, or a larger codebook."]
    assert sid_warnings(base) [0].startswith("SID level 3:")
    low = {**base, "distinct_sid_share": 0.4, "nmi_level1": [1.0, 0.1, 0.2]}
    assert sid_warnings(low, "y", min_distinct_sid_share=0.41) == [
        "y: only 5 distinct full SIDs for 10 items (share 0.400 < 0.41); up to 3 items share one SID "
        "and cannot be told apart by it. Try a larger codebook (now 4), or more levels (now 3)."]
    assert sid_warnings(low, "y", min_distinct_sid_share=0.4) == []
    assert len(sid_warnings(low, "y")) == 1
    assert sid_warnings(base, "x", nmi_level1_warn=0.95) == []
    assert len(sid_warnings(base, "x", nmi_level1_warn=0.85)) == 2

    class Psrq:
        name = "psrq"
        options = {"prefix_weight": "auto"}

    auto = {**base, "prefix_weights": [None, 0.5, 0.5]}
    assert sid_warnings(auto, "x", Psrq())[0].endswith(
        "Try a fixed PSRQ prefix_weight below the auto weights (0.5), fewer levels, or a larger "
        "codebook.")
    Psrq.options = {"prefix_weight": 1.25}
    both = {**auto, "prefix_weights": [None, 1.25, 0.3333333], "distinct_sid_share": 0.1}
    found = sid_warnings(both, "x", Psrq())
    assert found[0].endswith("Try a smaller PSRQ prefix_weight (now 1.25, 0.333) or prefix_weight: "
                             "auto, fewer levels, or a larger codebook.")
    assert found[1].endswith("Try a smaller PSRQ prefix_weight (now 1.25, 0.333) or prefix_weight: "
                             "auto, a larger codebook (now 4), or more levels (now 3).")
    Psrq.options = {}
    assert "(now )" in sid_warnings({**base}, "x", Psrq())[0]

    class Other:
        name = "rq_kmeans"
        options = {"prefix_weight": "auto"}

    assert "Try fewer levels" in sid_warnings(base, "x", Other())[0]


def test_report_passes_name_thresholds_and_quantizer_to_the_warnings():
    codes = np.array([[0, 0], [0, 0], [1, 1], [1, 1]])

    class Psrq:
        name = "psrq"
        options = {"prefix_weight": "auto", "chunk_size": 10, "threads": None}
        codebook_size = 2
        prefix_weights = [None, 0.75]

        def preprocess(self, X):
            return np.asarray(X, dtype=np.float32)

        def decode(self, codes, n_levels=None):
            return codes[:, :1 if n_levels == 1 else 2].sum(1, keepdims=True).astype(np.float32)

    X = np.array([[0.0], [0.0], [2.0], [2.0]], dtype=np.float32)
    report = sid_quality_report(X, codes, quantizer=Psrq(), name="audio_sid", knn_k=1,
                                nmi_level1_warn=0.5, min_distinct_sid_share=0.6)
    assert report["warning_thresholds"] == {"nmi_level1": 0.5, "distinct_sid_share": 0.6}
    assert report["warnings"][0].startswith("audio_sid level 2: NMI with the level-1 codes is "
                                            "1.000 > 0.5")
    assert "below the auto weights (0.75)" in report["warnings"][0]
    assert report["warnings"][1].startswith("audio_sid: only 2 distinct full SIDs for 4 items "
                                            "(share 0.500 < 0.6)")


def test_knn_recall_by_hand_with_ties_batches_and_samples():
    # 1-D points 0, 1, 3, 7, 8; SIDs: {0, 1} -> 0.5, {3} -> 3, {7, 8} -> 7.5
    X = np.array([[0.0], [1.0], [3.0], [7.0], [8.0]], dtype=np.float32)
    codes = np.array([[0], [0], [1], [2], [2]])
    q = _Lookup([[0.5, 3.0, 7.5]], chunk_size=2)
    # k = 1: true NN 0->1, 1->0, 3->1, 7->8, 8->7. SID space: 0 sees 1 at 0 (hit), 1 sees 0 (hit),
    # 3 sees 0 and 1 tied at 2.5 (1/2), 7 sees 8 (hit), 8 sees 7 (hit)
    for batch in (1, 2, 64):
        assert knn_recall(X, codes, q, sample=5, k=1, query_batch=batch) == pytest.approx(4.5 / 5)
    # k = 2: true 0->{1,3}, 1->{0,3}, 3->{1,0}, 7->{8,3}, 8->{7,3}. SID: 0 sees 1 (0) then 3 (2.5)
    # -> 2/2; 1 the same; 3 sees 0, 1 (2.5) -> 2/2; 7 sees 8 (0), then 3 (4.5) -> 2/2; 8 the same
    assert knn_recall(X, codes, q, sample=5, k=2) == pytest.approx(1.0)
    # k larger than N - 1 is cut to N - 1; one item has no neighbours at all
    assert knn_recall(X, codes, q, sample=5, k=10) == knn_recall(X, codes, q, sample=5, k=4)
    assert knn_recall(X, codes, q, sample=5, k=10) == 1.0  # k = 4: every other item (k = 3: < 1)
    assert knn_recall(X[:1], codes[:1], q, sample=5, k=3) is None
    # a seeded sample of queries: the mean over exactly those
    queries = np.sort(np.random.default_rng(4).choice(5, 2, replace=False))
    per_query = {0: 1, 1: 1, 2: 0.5, 3: 1, 4: 1}
    assert knn_recall(X, codes, q, sample=2, k=1, seed=4) == pytest.approx(
        np.mean([per_query[i] for i in queries]))
    assert knn_recall(X, codes, q, sample=2, k=1) == pytest.approx(
        np.mean([per_query[i] for i in np.sort(np.random.default_rng(0).choice(5, 2,
                                                                               replace=False))]))
    assert type(knn_recall(X, codes, q, sample=5, k=1)) is float


def test_knn_recall_tie_share_uses_the_free_slots():
    # query 0 at 0; items 1, 2, 3 at distance 1 (one SID, decoded 1), item 4 at distance 5 (true NN
    # order 1, 2, 3 by index inside faiss ties is irrelevant: k = 2 true neighbours among 1..3)
    X = np.array([[0.0], [0.9], [1.0], [1.1], [5.0]], dtype=np.float32)
    codes = np.array([[0], [1], [1], [1], [2]])
    q = _Lookup([[0.0, 1.0, 5.0]])
    # query 0: SID distances 1, 1, 1, 25 -> 3 tied for 2 slots: each true neighbour 2/3 -> 4/3 / 2
    recall_first = knn_recall(X[[0, 1, 2, 3, 4]], codes, q, sample=5, k=2)
    # by hand for every query (k = 2):
    # q0 true {1(.9), 2(1)}; SID: 1,2,3 at 1 tied, 2 slots -> 2 * 2/3 = 4/3
    # q1 true {2, 3}(.1 .2); SID: 2, 3 at 0, then 0 at 1 -> 2
    # q2 true {1, 3}; SID: 1, 3 at 0 -> 2;   q3 true {2, 1}; -> 2
    # q4 true {3(3.9), 2(4)}; SID: 1,2,3 at 16 tied, 2 slots -> 4/3
    assert recall_first == pytest.approx((4 / 3 + 2 + 2 + 2 + 4 / 3) / 2 / 5)


def test_input_space_neighbours_skip_the_query_and_use_the_preprocessed_space():
    X = np.array([[1.0, 0.0], [1.0, 0.0], [10.0, 0.1], [0.0, 1.0], [0.0, 3.0]], dtype=np.float32)

    class Normalising:
        options = {"chunk_size": 2, "threads": 1}

        def preprocess(self, X):
            return _normalised(np.asarray(X, dtype=np.float32))

    neighbours = report_module._input_space_neighbours(X, Normalising(), np.array([0, 1, 3]), 2)
    assert neighbours.dtype == np.int64 and neighbours.shape == (3, 2)
    # 0 and 1 are duplicates: each is the other's first neighbour, then item 2 (nearly the same
    # direction once normalised); 3's nearest is 4 (the same direction), then 0 or 1
    assert neighbours[0].tolist() == [1, 2] and neighbours[1].tolist() == [0, 2]
    assert neighbours[2].tolist() == [4, 2]  # raw distances would give 0 or 1, not 2


def test_knn_recall_defaults_and_the_seeded_queries(monkeypatch):
    seen = []
    original = report_module._input_space_neighbours

    def spy(X, quantizer, queries, k):
        seen.append((queries.copy(), k))
        return original(X, quantizer, queries, k)

    monkeypatch.setattr(report_module, "_input_space_neighbours", spy)
    n = 2100
    X = np.arange(n, dtype=np.float32)[:, None]
    codes = np.arange(n)[:, None]
    q = _Lookup([np.arange(n)], chunk_size=1000)
    assert knn_recall(X, codes, q) == 1.0  # every item its own SID at its own position
    queries, k = seen[-1]
    assert k == 10 and len(queries) == 2000
    np.testing.assert_array_equal(queries, np.sort(np.random.default_rng(0).choice(n, 2000,
                                                                                  replace=False)))
    knn_recall(X[:50], codes[:50], q, sample=20, k=3, seed=6)
    queries, k = seen[-1]
    assert k == 3
    np.testing.assert_array_equal(queries, np.sort(np.random.default_rng(6).choice(50, 20,
                                                                                  replace=False)))
    sid_quality_report(X, codes, quantizer=q, codebook_size=2100)  # knn_sample 2000, seed 0
    assert seen[-1][1] == 10
    np.testing.assert_array_equal(seen[-1][0], np.sort(np.random.default_rng(0).choice(
        n, 2000, replace=False)))
    sid_quality_report(X[:50], codes[:50], quantizer=q, codebook_size=2100)
    assert seen[-1][1] == 10 and len(seen[-1][0]) == 50
    sid_quality_report(X[:30], codes[:30], quantizer=q, codebook_size=2100, knn_sample=5, seed=2)
    np.testing.assert_array_equal(seen[-1][0], np.sort(np.random.default_rng(2).choice(30, 5,
                                                                                      replace=False)))


def test_rq_vae_epoch_log_has_the_mean_training_loss_and_the_codes_used(caplog):
    """lr 1e-9: the weights barely move during the epoch, so the epoch's mean training loss is the
    loss of the kept model on all rows: MSE(decoder(quantised latent), x) + codebook losses."""
    q = build_quantizer("rq_vae", **{**TINY, "epochs": 1, "n_levels": 2, "lr": 1e-9,
                                     "batch_size": 5})  # 12 rows: batches of 5, 5 and 2
    with caplog.at_level(logging.DEBUG, logger="recbole_psrq.quantization.rq_vae"):
        q.fit(X_SMALL)
    records = [r for r in caplog.records if r.msg.startswith("rq_vae epoch")]
    assert len(records) == 1
    args = records[0].args
    x = torch.from_numpy(q.preprocess(X_SMALL))
    with torch.no_grad():
        quantized, codes, codebook_loss = _residual_quantize(q.net.encoder(x),
                                                             torch.from_numpy(q.codebooks), 0.25)
        expected = torch.nn.functional.mse_loss(q.net.decoder(quantized), x) + codebook_loss
    assert args[:2] == (1, 1)
    assert args[2] == pytest.approx(float(expected), rel=1e-4)
    assert args[3] == args[4] == q.training_summary["recon_mse"] and args[5] == 1
    assert args[6] == [len(np.unique(codes[:, level].numpy())) for level in range(2)]
    assert args[7] == [0, 0] and 0 <= args[8] < 600  # the epoch's seconds
