"""The paper's Fig. 1 idea as a measured picture: a 2-D PCA map of items coloured by label and by
level-2 codes of RQ-KMeans vs PSRQ, plus per-level codebook utilisation.

With RQ-KMeans, level-2 codes are chosen on residuals alone, so one level-2 colour is scattered
over the whole map ("semantic drift"); PSRQ's level-2 codes also see the prefix and should stay
local. Colours cycle through 20 hues (code mod 20), so distant patches of one colour may be
different codes; the titles give the NMI numbers that do not depend on colour.
"""
import logging

import numpy as np

from recbole_psrq.quantization.report import normalized_mutual_info
from recbole_psrq.quantization.residual import PSRQQuantizer, ResidualKMeansQuantizer

logger = logging.getLogger(__name__)


def plot_semantic_drift(path, X, labels, quantizer, codes, sample=3000, seed=0):
    """Write the figure to ``path`` (PNG). ``quantizer``/``codes`` are reused when they are the
    RQ-KMeans or PSRQ run; the other of the two is fitted here with the same settings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {quantizer.name: (quantizer, codes)}
    for cls in (ResidualKMeansQuantizer, PSRQQuantizer):
        if cls.name not in runs:
            runs[cls.name] = _fit_companion(cls, quantizer, X)
    rows = np.sort(np.random.default_rng(seed).choice(X.shape[0], min(sample, X.shape[0]),
                                                      replace=False))
    points = _pca_2d(quantizer.preprocess(X[rows]))
    level = 1 if quantizer.n_levels > 1 else 0

    figure, axes = plt.subplots(2, 2, figsize=(12, 10))
    if labels is not None:
        known = np.array([label is not None for label in labels[rows]])
        _, label_ids = np.unique(labels[rows][known].astype(str), return_inverse=True)
        axes[0, 0].scatter(*points[~known].T, s=3, c="lightgrey")
        _scatter(axes[0, 0], points[known], label_ids, "items coloured by label")
    else:
        _scatter(axes[0, 0], points, codes[rows, 0], f"{quantizer.name} level-1 codes (no labels)")
    for axis, name in ((axes[0, 1], "rq_kmeans"), (axes[1, 0], "psrq")):
        run_codes = runs[name][1]
        title = f"{name} level-{level + 1} codes"
        if labels is not None:
            known_all = np.array([label is not None for label in labels])
            nmi = normalized_mutual_info(run_codes[known_all, level],
                                         labels[known_all].astype(str))
            title += f" (NMI vs labels {nmi:.3f})"
        _scatter(axis, points, run_codes[rows, level], title)
    _utilisation_bars(axes[1, 1], runs)
    figure.suptitle(f"Semantic drift: {X.shape[0]} items, k={quantizer.codebook_size}, "
                    f"{len(rows)} drawn (PCA of normalised embeddings)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _fit_companion(cls, quantizer, X):
    shared = {key: value for key, value in quantizer.options.items()
              if key in cls.allowed_options()}
    companion = cls(n_levels=quantizer.n_levels, codebook_size=quantizer.codebook_size,
                    seed=quantizer.seed, **shared)
    logger.info("fitting %s for the comparison figure", cls.name)
    return companion, companion.fit(X).encode(X)


def _pca_2d(x):
    centred = x - x.mean(0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def _scatter(axis, points, colours, title):
    axis.scatter(*points.T, s=3, c=np.asarray(colours) % 20, cmap="tab20", vmin=0, vmax=19)
    axis.set_title(title, fontsize=10)
    axis.set_xticks([])
    axis.set_yticks([])


def _utilisation_bars(axis, runs):
    width = 0.8 / len(runs)
    for i, (name, (run, run_codes)) in enumerate(runs.items()):
        used = [len(np.unique(c)) / run.codebook_size for c in run_codes.T]
        axis.bar(np.arange(len(used)) + 1 + (i - (len(runs) - 1) / 2) * width, used, width,
                 label=name)
    axis.set_xticks(np.arange(1, max(len(c.T) for _, c in runs.values()) + 1))
    axis.set_xlabel("level")
    axis.set_ylabel("codebook utilisation")
    axis.set_ylim(0, 1.05)
    axis.legend()
    axis.set_title("fraction of codebook entries used", fontsize=10)
