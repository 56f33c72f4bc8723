"""SID quality report: how well semantic IDs use their codebooks, preserve the embedding geometry
and keep the original semantics at deeper levels ("semantic drift", the paper's Fig. 1 claim).

Definitions (the project's choices where the paper gives none):
- ``utilization[l]``: distinct level-l codes used / codebook_size.
- ``perplexity[l]``: exp(entropy) of the level-l code distribution (k when usage is uniform).
- ``collision_rate``: 1 - distinct full SID tuples / N; ``max_items_per_sid``: largest tuple bucket.
- ``recon_mse``: mean over items of the squared L2 distance between the normalised input and its
  decoded reconstruction (with unit-norm rows this is comparable across embedding widths);
  ``recon_mse_by_levels[l]`` does the same using only the first l + 1 levels.
- ``knn_recall@K``: for ``knn_sample`` seeded query items, the fraction of their K nearest neighbours
  in the normalised input space (exact L2, faiss IndexFlatL2, query itself excluded) that are also
  among their K nearest neighbours in SID space. SID-space distance = L2 distance between decoded
  reconstructions, so items sharing a SID tuple are tied. Ties at the K-th SID distance are resolved
  by their expectation under random tie-breaking: a true neighbour inside the tied group counts
  (free slots / group size). This is deterministic and does not reward or punish collisions
  arbitrarily.
- ``nmi_labels[l]`` / ``purity_labels[l]``: NMI (arithmetic-mean normalisation, as sklearn's default)
  and purity of level-l codes against item labels (e.g. genre); items whose label is None are left
  out, ``labelled_items`` says how many were used. ``nmi_level1[l]``: NMI of level-l codes against
  level-1 codes (how much deeper levels stay tied to the coarse semantics). NMI is sklearn's
  ``normalized_mutual_info_score`` (default ``average_method="arithmetic"``) when scikit-learn is
  installed, else the same formula in numpy (``normalized_mutual_info``; scikit-learn is not a
  dependency of the project).
- ``distinct_sid_share``: ``unique_sids / n_items`` (the items are distinct: one row per item id).
- ``prefix_weights[l]`` (PSRQ only): the prefix weight level l used (None at level 1); with
  ``prefix_weight: auto`` these are the weights chosen at fit.
- ``warnings``: sentences for SIDs that are probably unfit for a recommender, each naming the
  modality and level, the figure, the threshold and what to try (also ``warning_thresholds``):
  (a) a level l >= 2 with ``nmi_level1[l] > NMI_LEVEL1_WARN`` (0.9): its codes are nearly a function
  of the level-1 code, so the level adds almost no information;
  (b) ``distinct_sid_share < MIN_DISTINCT_SID_SHARE`` (0.5): fewer distinct full SIDs than half the
  items, so many items share one SID and the model cannot tell them apart.
"""
import faiss
import numpy as np

from recbole_psrq.errors import DataFormatError
from recbole_psrq.quantization.base import check_matrix, limit_threads

#: warn when a level >= 2 has NMI with the level-1 codes above this (nearly a function of level 1)
NMI_LEVEL1_WARN = 0.9
#: warn when distinct full SIDs / items is below this
MIN_DISTINCT_SID_SHARE = 0.5


def sid_quality_report(X, codes, labels=None, quantizer=None, codebook_size=None, knn_sample=2000,
                       knn_k=10, seed=0, name="SID", nmi_level1_warn=NMI_LEVEL1_WARN,
                       min_distinct_sid_share=MIN_DISTINCT_SID_SHARE):
    """Dict of SID quality metrics (see the module docstring) of ``codes`` (N, L), the SIDs of the
    embeddings ``X`` (N, d). ``quantizer`` (fitted) enables the reconstruction and kNN metrics and
    supplies ``codebook_size``; without it ``X`` is not read. ``labels`` (length N, None = unknown)
    enables the label metrics. Per-level metrics are lists indexed by level; the caller adds
    ``fit_seconds``. ``name`` (e.g. the modality's field, ``text_sid``) opens each sentence of
    ``warnings``; ``nmi_level1_warn`` and ``min_distinct_sid_share`` are their thresholds."""
    codes = _check_codes(codes)
    n_items, n_levels = codes.shape
    if codebook_size is None and quantizer is not None:
        codebook_size = quantizer.codebook_size
    report = {
        "n_items": int(n_items),
        "n_levels": int(n_levels),
        "codebook_size": None if codebook_size is None else int(codebook_size),
        "utilization": [None if codebook_size is None else len(np.unique(c)) / codebook_size
                        for c in codes.T],
        "perplexity": [_perplexity(c) for c in codes.T],
    }
    _, bucket_sizes = np.unique(codes, axis=0, return_counts=True)
    report["unique_sids"] = int(len(bucket_sizes))
    report["collision_rate"] = 1.0 - len(bucket_sizes) / n_items
    report["max_items_per_sid"] = int(bucket_sizes.max())
    report["distinct_sid_share"] = len(bucket_sizes) / n_items
    report["nmi_level1"] = [normalized_mutual_info(c, codes[:, 0]) for c in codes.T]
    weights = getattr(quantizer, "prefix_weights", None)
    if weights is not None:
        report["prefix_weights"] = [None if w is None else float(w) for w in weights]
    if labels is not None:
        report.update(_label_metrics(codes, labels))
    if quantizer is not None:
        X = check_matrix(X, "sid_quality_report")
        if X.shape[0] != n_items:
            raise DataFormatError(
                f"sid_quality_report: {X.shape[0]} embedding rows but {n_items} code rows; pass the "
                "codes of exactly these embeddings."
            )
        report["recon_mse_by_levels"] = [_reconstruction_error(X, codes, quantizer, levels)
                                         for levels in range(1, n_levels + 1)]
        report["recon_mse"] = report["recon_mse_by_levels"][-1]
        report[f"knn_recall@{knn_k}"] = knn_recall(X, codes, quantizer, knn_sample, knn_k, seed)
    else:
        report["recon_mse"] = None
        report[f"knn_recall@{knn_k}"] = None
    report["warning_thresholds"] = {"nmi_level1": nmi_level1_warn,
                                    "distinct_sid_share": min_distinct_sid_share}
    report["warnings"] = sid_warnings(report, name, quantizer, nmi_level1_warn,
                                      min_distinct_sid_share)
    return report


def sid_warnings(report, name="SID", quantizer=None, nmi_level1_warn=NMI_LEVEL1_WARN,
                 min_distinct_sid_share=MIN_DISTINCT_SID_SHARE):
    """The warning sentences of a report (see the module docstring); ``quantizer`` (optional) tailors
    the advice (PSRQ's prefix weight)."""
    hint = ""
    if getattr(quantizer, "name", None) == "psrq":
        used = ", ".join(dict.fromkeys(f"{w:.3g}" for w in report.get("prefix_weights") or []
                                       if w is not None))
        if quantizer.options.get("prefix_weight") == "auto":
            hint = f"a fixed PSRQ prefix_weight below the auto weights ({used}), "
        else:
            hint = f"a smaller PSRQ prefix_weight (now {used}) or prefix_weight: auto, "
    warnings = []
    n_levels = report["n_levels"]
    for level in range(1, n_levels):
        nmi = report["nmi_level1"][level]
        if nmi > nmi_level1_warn:
            warnings.append(
                f"{name} level {level + 1}: NMI with the level-1 codes is {nmi:.3f} > "
                f"{nmi_level1_warn}, so its codes are nearly a function of level 1 and add little "
                f"information. Try {hint}fewer levels, or a larger codebook."
            )
    share = report["distinct_sid_share"]
    if share < min_distinct_sid_share:
        warnings.append(
            f"{name}: only {report['unique_sids']} distinct full SIDs for {report['n_items']} items "
            f"(share {share:.3f} < {min_distinct_sid_share}); up to {report['max_items_per_sid']} "
            f"items share one SID and cannot be told apart by it. Try {hint}a larger codebook (now "
            f"{report['codebook_size']}), or more levels (now {n_levels})."
        )
    return warnings


def normalized_mutual_info(a, b):
    """NMI of two labelings with arithmetic-mean normalisation, MI / ((H(a) + H(b)) / 2): sklearn's
    ``normalized_mutual_info_score`` (default ``average_method="arithmetic"``) when scikit-learn is
    installed, else :func:`numpy_normalized_mutual_info`, the same formula (1.0 when both labelings
    are constant)."""
    score = _sklearn_nmi()
    if score is None:
        return numpy_normalized_mutual_info(a, b)
    return float(score(np.asarray(a), np.asarray(b)))


def _sklearn_nmi():
    try:
        from sklearn.metrics import normalized_mutual_info_score
    except ImportError:
        return None
    return normalized_mutual_info_score


def numpy_normalized_mutual_info(a, b):
    """NMI MI / ((H(a) + H(b)) / 2) in numpy (the fallback without scikit-learn)."""
    _, a = np.unique(np.asarray(a), return_inverse=True)
    _, b = np.unique(np.asarray(b), return_inverse=True)
    n_a, n_b = a.max() + 1, b.max() + 1
    if n_a == n_b == 1:
        return 1.0
    n = len(a)
    pairs, joint_counts = np.unique(a.astype(np.int64) * n_b + b, return_counts=True)
    p_joint = joint_counts / n
    p_a = np.bincount(a) / n
    p_b = np.bincount(b) / n
    mutual_info = np.sum(p_joint * np.log(p_joint / (p_a[pairs // n_b] * p_b[pairs % n_b])))
    normaliser = (_entropy(p_a) + _entropy(p_b)) / 2
    return float(max(mutual_info, 0.0) / max(normaliser, np.finfo(np.float64).eps))


def purity(codes, labels):
    """Fraction of items whose label is the majority label of their code's cluster."""
    _, codes = np.unique(np.asarray(codes), return_inverse=True)
    _, labels = np.unique(np.asarray(labels), return_inverse=True)
    pairs, counts = np.unique(codes.astype(np.int64) * (labels.max() + 1) + labels,
                              return_counts=True)
    majority = np.zeros(codes.max() + 1, dtype=np.int64)
    np.maximum.at(majority, pairs // (labels.max() + 1), counts)
    return float(majority.sum() / len(codes))


def knn_recall(X, codes, quantizer, sample=2000, k=10, seed=0, query_batch=64):
    """Mean recall of the ``k`` input-space nearest neighbours among the ``k`` SID-space nearest
    neighbours, over a seeded sample of query items (definition and tie rule: module docstring)."""
    n_items = codes.shape[0]
    k = min(k, n_items - 1)
    if k < 1:
        return None
    queries = np.sort(np.random.default_rng(seed).choice(n_items, min(sample, n_items),
                                                         replace=False))
    true_neighbours = _input_space_neighbours(X, quantizer, queries, k)
    tuples, tuple_of_item = np.unique(codes, axis=0, return_inverse=True)
    tuple_of_item = tuple_of_item.reshape(-1)
    centres = quantizer.decode(tuples)
    squared_norms = (centres ** 2).sum(1)
    recalls = []
    for start in range(0, len(queries), query_batch):
        batch = queries[start:start + query_batch]
        query_centres = centres[tuple_of_item[batch]]
        tuple_distances = squared_norms - 2 * query_centres @ centres.T \
            + (query_centres ** 2).sum(1, keepdims=True)
        distances = tuple_distances[:, tuple_of_item]
        distances[np.arange(len(batch)), batch] = np.inf  # a query is not its own neighbour
        kth = np.partition(distances, k - 1, axis=1)[:, k - 1:k]
        closer = (distances < kth).sum(1)
        tied = (distances == kth).sum(1)
        neighbour_distances = np.take_along_axis(distances, true_neighbours[start:start + len(batch)],
                                                 axis=1)
        hits = (neighbour_distances < kth).sum(1) \
            + (neighbour_distances == kth).sum(1) * (k - closer) / tied
        recalls.append(hits / k)
    return float(np.concatenate(recalls).mean())


def _input_space_neighbours(X, quantizer, queries, k):
    """(len(queries), k) exact L2 nearest neighbours in the quantizer's normalised input space."""
    index = faiss.IndexFlatL2(X.shape[1])
    step = quantizer.options["chunk_size"]
    for start in range(0, X.shape[0], step):
        index.add(quantizer.preprocess(X[start:start + step]))
    with limit_threads(quantizer.options["threads"]):
        _, found = index.search(quantizer.preprocess(X[queries]), k + 1)
    neighbours = np.empty((len(queries), k), dtype=np.int64)
    for row, (query, candidates) in enumerate(zip(queries, found)):
        candidates = candidates[candidates != query]  # duplicates may push the query off rank 1
        neighbours[row] = candidates[:k]
    return neighbours


def _reconstruction_error(X, codes, quantizer, levels):
    step = quantizer.options["chunk_size"]
    total = 0.0
    for start in range(0, X.shape[0], step):
        x = quantizer.preprocess(X[start:start + step])
        reconstruction = quantizer.decode(codes[start:start + step], n_levels=levels)
        total += float(((x - reconstruction) ** 2).sum(dtype=np.float64))
    return total / X.shape[0]


def _label_metrics(codes, labels):
    labels = np.asarray(labels, dtype=object)
    if labels.shape != (codes.shape[0],):
        raise DataFormatError(
            f"sid_quality_report: labels must be one per item ({codes.shape[0]}), got shape "
            f"{labels.shape}."
        )
    known = np.array([label is not None for label in labels], dtype=bool)
    if not known.any():
        raise DataFormatError("sid_quality_report: every label is None; pass at least one label.")
    names = labels[known].astype(str)
    return {
        "labelled_items": int(known.sum()),
        "nmi_labels": [normalized_mutual_info(c[known], names) for c in codes.T],
        "purity_labels": [purity(c[known], names) for c in codes.T],
    }


def _perplexity(level_codes):
    return float(np.exp(_entropy(np.bincount(level_codes) / len(level_codes))))


def _entropy(p):
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _check_codes(codes):
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] == 0 or not np.issubdtype(codes.dtype, np.integer):
        raise DataFormatError(
            f"sid_quality_report: codes must be a non-empty integer matrix (N, levels), got dtype "
            f"{codes.dtype} with shape {codes.shape}."
        )
    if codes.min() < 0:
        raise DataFormatError("sid_quality_report: codes must be >= 0.")
    return codes.astype(np.int64, copy=False)
