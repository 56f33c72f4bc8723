"""What the benchmark runs: the training budgets, the metrics of each table, the experiments of each
suite (the paper's Tables 2-4 plus a top-k table), each table's baseline, claim and title."""
from dataclasses import dataclass, field

BUDGETS = {
    # one epoch leaves nothing to select, so no validation pass (eval_step 0: RecBole saves the model
    # after the epoch); validating would not change the test metrics, only cost time (a full-sort
    # validation of MCCA on MPD-5k takes ~30 min on one CPU core)
    "one_epoch": {"epochs": 1, "eval_step": 0},
    "early_stop": {"epochs": 20, "stopping_step": 2},
    # until validation stops improving for 5 validations: top-k models learn slowly (SASRec's Recall@10
    # after one epoch on MPD-5k: 0.0083), and on MPD-5k DeepFM/WideDeep were still improving at
    # early_stop's 20-epoch cap; the fair MPD study uses it for every table
    "converge": {"epochs": 200, "stopping_step": 5},
}
CTR_METRICS = ["auc", "coldauc", "coldauc_strict", "coldauc_unseen", "userauc", "logloss"]  # userauc = GAUC
# the default cold buckets (``cold_buckets`` in properties/overall.yaml): each reports <bucket>_rows/_share
COLD_BUCKETS = ["coldauc", "coldauc_strict", "coldauc_unseen"]
TOPK_METRICS = ["recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr@10"]
SMALLER_IS_BETTER = {"logloss"}
POINTWISE_NEGATIVES = {"train_neg_sample_args": "{'distribution': 'uniform', 'sample_num': 1}"}


@dataclass(frozen=True)
class Experiment:
    table: str
    name: str
    model: str
    overrides: dict = field(default_factory=dict)
    space: str = None  # a search-space file under properties/hyper (default: the model's, see tune.space)


def _din_sid(quantizer, levels=3, **options):
    sid = {"sid_modalities": "['text']", "sid_quantizer": quantizer, "sid_levels": levels}
    return {**sid, "sid_quantizer_options": repr(options)} if options else sid


# RQ-VAE trains until its reconstruction MSE stops falling (patience 10, min_delta 1e-3); its default cap of
# 200 epochs cut it short on MPD-5k's text (k=64, L=3, seed 0: MSE 0.3596 at the cap; stopped by patience at
# epoch 358 with 0.3457, 840 s on one loaded core), so the cap here is one it does not reach
RQ_VAE_OPTIONS = {"epochs": 1000}


SEQ_TEXT_SID = {"sid_modalities": "['text']", "selected_features": "['text_sid']"}
TOPK_SPACE = "topk_lr.yaml"  # every top-k model: the same learning-rate grid
# every top-k model validates (early stopping, the lr grid) on the same fixed 20% of the users: MCCA's
# full sort scores every item through cross-attention (~30 min per validation of all MPD-5k users on
# one core); training and test keep every user
TOPK_VALIDATION = {"valid_user_fraction": 0.2}


# a floor's validation score is the same every epoch, and RecBole's early stopping counts only epochs that
# score below the best (an equal one resets it), so under a budget's epoch cap a floor would idle through
# every epoch (measured on MPD-5k-pop under `converge`: 200 no-op epochs, 1,148 s for the content floor);
# one epoch gives the same scores
FLOOR_OVERRIDES = {"epochs": 1}


def floors(table):
    """The training-free reference rows of a CTR table, scored on the same test rows as its models."""
    return [Experiment(table, "Floor: popularity", "PopularityFloor", FLOOR_OVERRIDES),
            Experiment(table, "Floor: content (text)", "ContentFloor", FLOOR_OVERRIDES)]


PAPER_SUITE = [
    Experiment("T2", "DIN", "DIN"),
    Experiment("T2", "DIEN", "DIEN"),
    Experiment("T2", "DeepFM", "DeepFM"),
    Experiment("T2", "WideDeep", "WideDeep"),
    Experiment("T2", "DCNV2", "DCNV2"),
    Experiment("T2", "AutoInt", "AutoInt"),
    Experiment("T2", "PSRQ+MCCA", "MCCA"),
    *floors("T2"),
    Experiment("T3", "DIN", "DIN"),
    Experiment("T3", "DIN+PQ", "DIN", _din_sid("pq", 4)),
    Experiment("T3", "DIN+VQ", "DIN", _din_sid("vq", 1)),
    Experiment("T3", "DIN+RQ", "DIN", _din_sid("rq_kmeans")),
    Experiment("T3", "DIN+RQ-VAE", "DIN", _din_sid("rq_vae", **RQ_VAE_OPTIONS)),
    Experiment("T3", "DIN+PSRQ", "DIN", _din_sid("psrq")),
    *floors("T3"),
    Experiment("T4", "DIN", "DIN"),
    Experiment("T4", "MCCA w/o MSC", "MCCA", {"mcca_variant": "wo_msc"}),
    Experiment("T4", "MCCA w/o MJC", "MCCA", {"mcca_variant": "wo_mjc"}),
    Experiment("T4", "PSRQ+MCCA", "MCCA"),
    *floors("T4"),
    Experiment("TopK", "SASRec", "SASRec", TOPK_VALIDATION, space=TOPK_SPACE),
    Experiment("TopK", "GRU4Rec", "GRU4Rec", TOPK_VALIDATION, space=TOPK_SPACE),
    Experiment("TopK", "BERT4Rec", "BERT4Rec", TOPK_VALIDATION, space=TOPK_SPACE),
    Experiment("TopK", "SASRecF+SID", "SASRecF", {**SEQ_TEXT_SID, **TOPK_VALIDATION}, space=TOPK_SPACE),
    Experiment("TopK", "FDSA+SID", "FDSA", {**SEQ_TEXT_SID, **TOPK_VALIDATION}, space=TOPK_SPACE),
    Experiment("TopK", "PSRQ+MCCA", "MCCA", {"protocol": "topk", **POINTWISE_NEGATIVES, **TOPK_VALIDATION},
               space=TOPK_SPACE),
    # the floors rank every track under the same full sort as the sequential models: by its training
    # popularity (as targets), and by its text's cosine with the playlist's earlier tracks. RecBole's own Pop
    # would mask each user's history, which the sequential models' full sort does not
    Experiment("TopK", "Floor: popularity", "PopularityFloor",
               {"protocol": "topk", **FLOOR_OVERRIDES, **TOPK_VALIDATION}),
    Experiment("TopK", "Floor: content (text)", "ContentFloor",
               {"protocol": "topk", **FLOOR_OVERRIDES, **TOPK_VALIDATION}),
]
SUITES = {
    "paper": PAPER_SUITE,
    "ctr": [e for e in PAPER_SUITE if e.table != "TopK"],
    "t2": [e for e in PAPER_SUITE if e.table == "T2"],
    "topk": [e for e in PAPER_SUITE if e.table == "TopK"],
    "smoke": [Experiment("T2", "DIN", "DIN"), Experiment("T2", "DeepFM", "DeepFM")],
    # MCCA against DIN with and without SIDs, and the ablations (issue 4's default-dataset check)
    "mcca": [e for e in PAPER_SUITE if e.table in ("T3", "T4")
             and (e.name in ("DIN", "DIN+PSRQ", "MCCA w/o MSC", "MCCA w/o MJC", "PSRQ+MCCA")
                  or e.model.endswith("Floor"))],
}
BASELINES = {"T2": "DIN", "T3": "DIN", "T4": "DIN", "TopK": "SASRec"}
# the row each table's claim is about (the paper's method: PSRQ+MCCA, or PSRQ for the quantizer table); the
# report tests it against every other row of its table, in a Holm family of its own, and against the rows of
# other tables named in CLAIM_ALSO_VERSUS (T4: MCCA must add over the SIDs DIN already uses, Table 3's DIN+PSRQ)
CLAIMS = {"T2": "PSRQ+MCCA", "T3": "DIN+PSRQ", "T4": "PSRQ+MCCA", "TopK": "PSRQ+MCCA"}
CLAIM_ALSO_VERSUS = {"T4": [("T3", "DIN+PSRQ")]}
TABLE_TITLES = {
    "T2": "Table 2: MCCA vs CTR baselines",
    "T3": "Table 3: DIN + text SIDs from each quantizer",
    "T4": "Table 4: MCCA ablations",
    "TopK": "Top-k (full sort): MCCA vs sequential baselines",
}
