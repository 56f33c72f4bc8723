"""The training-free floors (recbole_psrq/model/floors.py) against hand computations on a toy dataset.

Toy data: 4 users x 10 time-ordered rows; the ctr protocol's per-user split (80/10/10 of 10 rows) makes
rows 1-8 of each user training rows, row 9 the valid row and row 10 the test row.
"""
import math

import numpy as np
import pytest
import torch

from recbole_psrq import quick_start
from recbole_psrq.data.embeddings import save_item_embeddings
from recbole_psrq.errors import ConfigError
from recbole_psrq.model.floors import ContentFloor, PopularityFloor
from tests.conftest import same_metrics

NAME = "floors_toy"
ROWS = {  # user -> (item, label) in time order
    "u1": "a1 b1 a1 d0 b1 a1 d0 e1 c1 c1",
    "u2": "a1 d0 b1 a1 d0 e0 a1 b1 c0 f1",
    "u3": "b1 a1 d0 a1 d0 b1 e0 a1 f1 d0",
    "u4": "a1 d0 a1 d0 b1 a1 e1 d0 c0 c1",
}
N_TRAIN = 8
# label-1 rows among each user's first 8 rows, counted by hand. c is positive 3 times in valid/test
# rows and d has 9 label-0 training rows: counting either would change the order.
TRAIN_POSITIVES = {"a": 12, "b": 7, "e": 2, "c": 0, "d": 0, "f": 0}
# 3-d text embeddings; f has none, g is not in the dataset
EMBEDDINGS = {"a": [1, 0, 0], "b": [0, 1, 0], "c": [1, 1, 0], "d": [0, 0, 1], "e": [1, 0, 1],
              "g": [5, 5, 5]}


def rows_of(user):
    return [(token[0], int(token[1])) for token in ROWS[user].split()]


def write_toy(root):
    folder = root / NAME
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float\tlabel:float"]
    for user in ROWS:
        lines += [f"{user}\t{item}\t{t}\t{label}" for t, (item, label) in enumerate(rows_of(user), 1)]
    (folder / f"{NAME}.inter").write_text("\n".join(lines) + "\n")
    save_item_embeddings(str(folder / f"{NAME}.text.npz"), list(EMBEDDINGS),
                         np.array(list(EMBEDDINGS.values()), dtype=np.float32))
    return str(root)


def toy_overrides(data_path, **extra):
    return {"data_path": data_path, "epochs": 1, "train_batch_size": 8, "eval_batch_size": 8,
            "load_col": {"inter": ["user_id", "item_id", "timestamp", "label"]},
            "sid_embedding_files": {"text": f"{NAME}.text.npz"}, "sid_modalities": [], **extra}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy(tmp_path_factory.mktemp("floors") / "data")


def splits(data_path, model, **extra):
    from recbole.data import data_preparation

    config = quick_start.build_config(model, dataset=NAME, overrides=toy_overrides(data_path, **extra))
    train, valid, test = data_preparation(config, quick_start.create_dataset(config))
    return config, train._dataset, valid._dataset, test._dataset


def item_ids(dataset, tokens):
    return torch.tensor([dataset.token2id(dataset.iid_field, t) for t in tokens])


def hand_content_score(user, position):
    """(1 + cos) / 2 of row ``position`` (0-based) of ``user``, or None where the floor is undefined:
    the history is the user's earlier label-1 rows (at most 20) that have an embedding."""
    rows = rows_of(user)
    history = [EMBEDDINGS[item] for item, label in rows[:position][-20:] if label and item in EMBEDDINGS]
    target = rows[position][0]
    if not history or target not in EMBEDDINGS:
        return None
    mean, vec = np.mean(np.array(history, dtype=float), axis=0), np.array(EMBEDDINGS[target], dtype=float)
    return (1 + mean @ vec / (np.linalg.norm(mean) * np.linalg.norm(vec))) / 2


def hand_neutral_score():
    """Median (lower middle) of the defined scores of the training rows."""
    scores = sorted(s for user in ROWS for p in range(N_TRAIN)
                    if (s := hand_content_score(user, p)) is not None)
    return scores[(len(scores) - 1) // 2]


def test_the_split_is_the_one_the_hand_counts_assume(toy):
    _, train, valid, test = splits(toy, "PopularityFloor")
    assert (len(train), len(valid), len(test)) == (4 * N_TRAIN, 4, 4)
    test_items = sorted(test.id2token(test.iid_field, test.inter_feat["item_id"]).tolist())
    assert test_items == sorted(rows_of(u)[-1][0] for u in ROWS)


def test_floors_score_the_same_test_rows_as_other_models(toy):
    def test_rows(model):
        test = splits(toy, model)[3]
        inter = test.inter_feat
        return sorted(zip(test.id2token(test.uid_field, inter["user_id"]).tolist(),
                          test.id2token(test.iid_field, inter["item_id"]).tolist(), inter["label"].tolist()))

    rows = test_rows("PopularityFloor")
    assert len(rows) == 4
    for model in ("ContentFloor", "DIN", "DeepFM"):
        assert test_rows(model) == rows, model


def test_popularity_floor_orders_items_by_hand_counted_training_positives(toy):
    config, train, _, test = splits(toy, "PopularityFloor")
    model = PopularityFloor(config, train)
    tokens = list(TRAIN_POSITIVES)
    ids = item_ids(train, tokens)
    assert model.train_positive_count[ids].tolist() == list(TRAIN_POSITIVES.values())
    from recbole.data.interaction import Interaction

    scores = model.predict(Interaction({"item_id": ids})).tolist()
    for i, x in enumerate(tokens):
        for j, y in enumerate(tokens):  # same order and same ties as the counts
            assert np.sign(scores[i] - scores[j]) == np.sign(TRAIN_POSITIVES[x] - TRAIN_POSITIVES[y]), (x, y)
    assert scores[tokens.index("a")] == pytest.approx((12 + 1) / (12 + 2))   # documented formula
    assert scores[tokens.index("f")] == pytest.approx(1 / 14)                 # unseen item
    # built on the test split (as a re-evaluated checkpoint is), it still counts the training split
    assert torch.equal(PopularityFloor(config, test).train_positive_count, model.train_positive_count)


def test_content_floor_equals_the_hand_computed_cosine(toy):
    config, train, _, test = splits(toy, "ContentFloor")
    model = ContentFloor(config, train).eval()
    # u1's test row: history a b a b a e c (label-1 rows 1-9) -> mean (5, 3, 1) / 7; target c = (1, 1, 0)
    assert hand_content_score("u1", 9) == pytest.approx((1 + 8 / math.sqrt(70)) / 2)
    assert model.neutral_score.item() == pytest.approx(hand_neutral_score())
    users = test.id2token(test.uid_field, test.inter_feat["user_id"]).tolist()
    with torch.no_grad():
        scores = model.predict(test.inter_feat).tolist()
    for user, score in zip(users, scores):
        # u2's candidate f has no embedding -> neutral; u3's history holds f, left out of the mean
        expected = hand_content_score(user, 9)
        assert score == pytest.approx(hand_neutral_score() if expected is None else expected, abs=1e-6), user
    assert hand_content_score("u2", 9) is None and hand_content_score("u3", 9) is not None


def test_floors_full_sort_equals_predict(toy):
    from recbole.data.interaction import Interaction

    for name, cls in (("PopularityFloor", PopularityFloor), ("ContentFloor", ContentFloor)):
        config, train, _, test = splits(toy, name)
        model = cls(config, train).eval()
        rows = test.inter_feat
        n_rows, n_items = len(rows), model.n_items
        pairs = Interaction({
            "item_id_list": rows["item_id_list"].repeat_interleave(n_items, 0),
            "item_length": rows["item_length"].repeat_interleave(n_items),
            "item_id": torch.arange(n_items).repeat(n_rows),
        })
        with torch.no_grad():
            full = model.full_sort_predict(rows)
            assert full.shape == (n_rows, n_items)
            assert torch.allclose(full, model.predict(pairs).view(n_rows, n_items), atol=1e-6), name


def test_content_floor_without_the_modality_is_a_config_error(toy):
    config, train, _, _ = splits(toy, "ContentFloor", content_floor_modality="audio")
    with pytest.raises(ConfigError, match="no 'audio' entry"):
        ContentFloor(config, train)


@pytest.mark.parametrize("model", ["PopularityFloor", "ContentFloor"])
def test_floor_runs_through_the_runner_and_its_checkpoint_reloads(toy, workdir, model):
    result = quick_start.run(model, dataset=NAME, overrides=toy_overrides(toy))
    assert result["protocol"] == "ctr"
    test = result["test_result"]
    assert 0.0 <= test["auc"] <= 1.0  # (userauc is NaN: one test row per user)
    # test rows: c (u1, label 1), f (u2, 1), d (u3, 0), c (u4, 1); training rows of c, f: 0, of d: 9
    assert (test["coldauc_rows"], test["coldauc_strict_rows"], test["coldauc_unseen_rows"]) == (4, 3, 3)
    assert test["coldauc_unseen_share"] == 0.75 and math.isnan(test["coldauc_unseen"])  # one label only
    again = quick_start.evaluate_checkpoint(result["checkpoint"])
    assert same_metrics(again, test)



def test_content_floor_ranks_every_item_under_the_topk_protocol_on_the_sequential_models_rows(toy, workdir):
    # the top-k table's floor (benchmark/suites.py): RecBole's full sort over every item, on the test rows
    # SASRec is scored on (each user's last positive)
    from recbole.data import data_preparation

    overrides = toy_overrides(toy, protocol="topk", topk=[1, 2], valid_metric="NDCG@2")
    result = quick_start.run("ContentFloor", dataset=NAME, overrides=overrides)
    assert result["protocol"] == "topk"
    config = quick_start.build_config("SASRec", dataset=NAME, overrides=toy_overrides(toy))
    sasrec = quick_start.create_dataset(config)
    data_preparation(config, sasrec)
    assert config["protocol"] == "topk"
    assert result["protocol_checks"]["test_rows"] == 4
    assert result["protocol_checks"]["test_digest"] == sasrec.protocol_report["test_digest"]
    assert {"recall@1", "recall@2", "ndcg@1", "ndcg@2"} <= set(result["test_result"])
    assert same_metrics(quick_start.evaluate_checkpoint(result["checkpoint"]), result["test_result"])


# Under top-k each user's label-1 rows are a sequence, the last the test target, the one before it the valid
# target; every earlier one but the first is a training target: a 8, b 5, e 1, c and f 0 (d is never label 1,
# so it is no item). The test targets (u1 c, u2 f, u3 f, u4 c) tie at ranks 4-5 behind a, b and e.
TOPK_TRAIN_TARGETS = {"a": 8, "b": 5, "e": 1, "c": 0, "f": 0}


def test_popularity_floor_under_the_topk_protocol(toy, workdir):
    overrides = toy_overrides(toy, protocol="topk", topk=[3, 5], valid_metric="NDCG@5")
    result = quick_start.run("PopularityFloor", dataset=NAME, overrides=overrides)
    model = torch.load(result["checkpoint"], weights_only=False)["state_dict"]
    config, train, _, _ = splits(toy, "PopularityFloor", protocol="topk")
    counts = model["train_positive_count"]
    assert {t: int(counts[train.token2id(train.iid_field, t)]) for t in TOPK_TRAIN_TARGETS} == TOPK_TRAIN_TARGETS
    test = result["test_result"]
    assert test["recall@3"] == 0 and test["recall@5"] == 1
    assert 1 / 5 <= test["mrr@5"] <= 1 / 4
