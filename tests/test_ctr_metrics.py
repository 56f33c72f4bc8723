import math

import numpy as np
import pytest
import torch

import recbole_psrq.model  # noqa: F401  (registers the metrics)
from recbole_psrq import quick_start
from recbole_psrq.evaluation import (DEFAULT_COLD_BUCKETS, ColdAUC, UserAUC, binary_auc, bucket_mask,
                                     cold_buckets, train_item_counts, user_auc)
from recbole_psrq.errors import ConfigError
from tests.test_mcca import ALL_METRICS, sid_overrides, write_sid_dataset


class _Cfg(dict):
    def __getitem__(self, key):
        return self.get(key)


def _struct(**tensors):
    from recbole.evaluator.collector import DataStruct

    struct = DataStruct()
    for key, value in tensors.items():
        struct.set(key.replace("_", "."), torch.as_tensor(value))
    return struct


def test_binary_auc_by_hand():
    # positives 0.9, 0.4; negatives 0.4, 0.1 -> pairs: (0.9>0.4) 1, (0.9>0.1) 1, (0.4=0.4) 1/2, (0.4>0.1) 1
    assert binary_auc([0.9, 0.4, 0.4, 0.1], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)
    assert math.isnan(binary_auc([0.3, 0.2], [1, 1]))


BUCKETS = {"coldauc": {"max_count": 29}, "coldauc_strict": {"max_count": 5},
           "coldauc_unseen": {"max_count": 0, "count": "all"}}
# training counts per item id 0..6; item 7 is beyond the table (unknown to the training split: 0)
COUNTS_ALL = [0, 40, 29, 30, 3, 6, 0]
COUNTS_POSITIVE = [0, 35, 29, 10, 0, 5, 0]
ROWS = [  # (item, label, score)
    (1, 1, .9), (2, 1, .7), (2, 0, .8), (3, 0, .1), (4, 1, .6), (4, 0, .2), (5, 1, .4), (6, 0, .5),
    (7, 1, .3), (1, 0, .35),
]


def _cold_struct(rows=ROWS):
    iids, label, score = zip(*rows)
    struct = _struct(rec_score=score, data_label=label, data_iid=iids)
    struct.set("data.train_item_count", torch.tensor([COUNTS_ALL, COUNTS_POSITIVE]))
    return struct


def _cold(buckets=BUCKETS, cold_count="all", **extra):
    return ColdAUC(_Cfg(metric_decimal_place=6, cold_buckets=buckets, cold_count=cold_count, **extra))


def test_bucket_membership_by_hand():
    iids = [r[0] for r in ROWS]
    # at most 29 rows of any label: items 2 (29), 4 (3), 5 (6), 6 (0), 7 (unknown)
    assert bucket_mask(iids, COUNTS_ALL, 29).tolist() == [0, 1, 1, 0, 1, 1, 1, 1, 1, 0]
    # at most 29 label-1 rows: item 3 (10 positives of 30 rows) joins
    assert bucket_mask(iids, COUNTS_POSITIVE, 29).tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 1, 0]
    assert bucket_mask(iids, COUNTS_ALL, 5).tolist() == [0, 0, 0, 0, 1, 1, 0, 1, 1, 0]
    assert bucket_mask(iids, COUNTS_POSITIVE, 5).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 0]
    assert bucket_mask(iids, COUNTS_ALL, 0).tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1, 0]


@pytest.mark.parametrize("cold_count, expected", [
    # all rows: coldauc = rows 1 2 4 5 6 7 8: positives .7 .6 .4 .3 vs negatives .8 .2 .5 -> 6/12;
    # strict = rows 4 5 7 8: .6 .3 vs .2 .5 -> 3/4; unseen = rows 7 8: .3 vs .5 -> 0
    ("all", {"coldauc": (6 / 12, 7), "coldauc_strict": (3 / 4, 4), "coldauc_unseen": (0.0, 2)}),
    # label-1 rows: coldauc gains row 3 (negative .1) -> 10/16; strict gains row 6 (positive .4) ->
    # .6 .4 .3 vs .2 .5 -> 4/6; unseen counts all rows whatever cold_count says -> unchanged
    ("positive", {"coldauc": (10 / 16, 8), "coldauc_strict": (4 / 6, 5), "coldauc_unseen": (0.0, 2)}),
])
def test_cold_buckets_equal_hand_computation(cold_count, expected):
    result = _cold(cold_count=cold_count).calculate_metric(_cold_struct())
    want = {}
    for name, (auc, rows) in expected.items():
        want.update({name: round(auc, 6), f"{name}_rows": rows, f"{name}_share": round(rows / len(ROWS), 6)})
    assert result == want


def test_a_bucket_without_rows_or_with_one_label_is_nan_with_a_reason(caplog):
    buckets = {"coldauc_unseen": {"max_count": 0, "count": "all"}, "none": {"max_count": 0, "count": "all"}}
    warm_and_unknown = [(1, 1, .9), (1, 0, .1), (7, 1, .3), (6, 1, .2)]
    with caplog.at_level("WARNING"):
        result = _cold(buckets={"coldauc_unseen": buckets["coldauc_unseen"]}).calculate_metric(
            _cold_struct(warm_and_unknown))
    assert math.isnan(result["coldauc_unseen"]) and result["coldauc_unseen_rows"] == 2
    assert "bucket 'coldauc_unseen'" in caplog.text and "2 evaluated rows all have label 1" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        result = _cold(buckets={"none": 0}).calculate_metric(_cold_struct([(1, 1, .9), (1, 0, .1)]))
    assert math.isnan(result["none"]) and (result["none_rows"], result["none_share"]) == (0, 0.0)
    assert "bucket 'none'" in caplog.text and "has no evaluated row" in caplog.text


@pytest.mark.parametrize("buckets, extra, message", [
    ({"coldauc": {"max_count": -1}}, {}, "integer N >= 0"),
    ({"coldauc": {"max_count": 3, "count": "most"}}, {}, "cold_count must be one of"),
    ({"coldauc": {"threshold": 30}}, {}, "must be {max_count: N}"),
    ({"auc": 5}, {}, "must not be another metric's name"),
    ({}, {}, "cold_buckets must map"),
    (BUCKETS, {"cold_item_threshold": 10},
     r"cold_item_threshold \(10\) .* cold_buckets: \{coldauc: \{max_count: 9\}"),
])
def test_bad_cold_bucket_config_is_a_config_error(buckets, extra, message):
    with pytest.raises(ConfigError, match=message):
        _cold(buckets=buckets, **extra)


def test_default_buckets_and_the_former_threshold():
    config = quick_start.build_config("DeepFM", overrides={"sid_modalities": []})
    assert config["cold_buckets"] == DEFAULT_COLD_BUCKETS == BUCKETS
    assert [b.name for b in cold_buckets(config)] == ["coldauc", "coldauc_strict", "coldauc_unseen"]
    # the bucket coldauc (at most 29) is the former cold_item_threshold 30 (fewer than 30): accepted
    legacy = _Cfg(cold_buckets=BUCKETS, cold_item_threshold=30)
    assert [b.max_count for b in cold_buckets(legacy)] == [29, 5, 0]
    shorthand = _Cfg(cold_buckets={"x": 3}, cold_count="positive")
    assert [(b.max_count, b.count) for b in cold_buckets(shorthand)] == [(3, "positive")]


def test_user_auc_equals_hand_computation():
    users = [1, 1, 1, 2, 2, 3, 3, 3, 3]
    label = [1, 0, 0, 1, 1, 1, 0, 1, 0]
    score = [0.5, 0.6, 0.1, 0.2, 0.9, 0.8, 0.3, 0.3, 0.9]
    # user 1: pos .5 vs .6, .1 -> 1/2 (3 rows); user 2: all positive -> skipped;
    # user 3: pos .8, .3 vs neg .3, .9 -> (.8>.3)=1 (.8<.9)=0 (.3=.3)=1/2 (.3<.9)=0 -> 1.5/4 (4 rows)
    expected = (3 * 0.5 + 4 * 0.375) / 7
    value, used, skipped = user_auc(score, label, users)
    assert (used, skipped) == (2, 1)
    assert value == pytest.approx(expected)
    metric = UserAUC(_Cfg(metric_decimal_place=6))
    assert metric.calculate_metric(_struct(rec_score=score, data_label=label, data_uid=users)) == \
        {"userauc": round(expected, 6)}


def test_metrics_are_registered_without_touching_recboles_gauc():
    from recbole.evaluator.register import metric_types, metrics_dict
    from recbole.utils import EvaluatorType

    assert metrics_dict["coldauc"] is ColdAUC and metrics_dict["userauc"] is UserAUC
    assert metric_types["coldauc"] == metric_types["userauc"] == EvaluatorType.VALUE
    assert metric_types["gauc"] == EvaluatorType.RANKING  # RecBole's GAUC is unchanged
    config = quick_start.build_config("DeepFM", overrides={"sid_modalities": []})
    assert [m.lower() for m in config["metrics"]] == ["auc", "coldauc", "userauc", "logloss"]
    assert config["eval_type"] == EvaluatorType.VALUE


def test_collector_gathers_ids_and_resets_them_per_evaluation():
    from recbole.data.interaction import Interaction
    from recbole.evaluator.collector import Collector

    config = quick_start.build_config("DeepFM", overrides={"sid_modalities": []})
    collector = Collector(config)
    collector.data_struct.set("data.train_item_count", torch.tensor([0, 50, 1]))
    batch = Interaction({"user_id": torch.tensor([1, 1, 2]), "item_id": torch.tensor([1, 2, 2]),
                         "label": torch.tensor([1.0, 0.0, 1.0])})
    for _ in range(2):  # a second evaluation must not see the first one's rows
        collector.eval_batch_collect(torch.tensor([0.9, 0.2, 0.4]), batch, None, None)
        struct = collector.get_data_struct()
        assert struct.get("data.uid").tolist() == [1, 1, 2]
        assert struct.get("data.iid").tolist() == [1, 2, 2]
        assert struct.get("rec.score").shape == (3,)
    fresh = Collector(config)
    fresh.eval_batch_collect(torch.tensor([0.9, 0.2, 0.4]), batch, None, None)
    with pytest.raises(RuntimeError, match="training split's item counts"):
        fresh.get_data_struct()


class _Split:
    def __init__(self, items, labels):
        from recbole.data.interaction import Interaction

        self.inter_feat = Interaction({"item_id": torch.tensor(items), "label": torch.tensor(labels)})
        self.iid_field = "item_id"
        self.item_num = 5
        self.config = _Cfg(LABEL_FIELD="label")


def test_training_counts_all_or_positive_rows():
    split = _Split([1, 1, 2, 3, 3, 3], [1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    assert train_item_counts(split, "all").tolist() == [0, 2, 1, 3, 0]
    assert train_item_counts(split, "positive").tolist() == [0, 1, 0, 2, 0]
    with pytest.raises(ConfigError, match="cold_count"):
        train_item_counts(split, "most")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["DeepFM", "DIN"])
def test_any_model_reports_cold_and_user_auc(model, tmp_path, workdir):
    from recbole.data import data_preparation

    data_path = write_sid_dataset(tmp_path / "data")
    result = quick_start.run(model, overrides=sid_overrides(data_path), saved=False)
    assert set(result["test_result"]) == ALL_METRICS
    # the counts behind ColdAUC are the training split's
    config = quick_start.build_config(model, overrides=sid_overrides(data_path))
    train, _, test = data_preparation(config, quick_start.create_dataset(config))
    counts = test._dataset._psrq_train_item_counts["all"]
    items = train._dataset.inter_feat["item_id"]
    assert torch.equal(counts, torch.bincount(items, minlength=train._dataset.item_num))
    assert np.isclose(float(counts.sum()), len(train._dataset))
