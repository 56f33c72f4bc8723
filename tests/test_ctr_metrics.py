import math
import warnings

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
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one class: NaN by the early return, not by dividing 0 by 0
        assert math.isnan(binary_auc([0.3, 0.2], [1, 1]))
        assert math.isnan(binary_auc([0.3, 0.2], [0, 0]))


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
    iids, label, score = zip(*rows) if rows else ([], [], [])
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
    caplog.clear()
    with caplog.at_level("WARNING"):  # a single row: its label is named
        result = _cold(buckets={"none": 0}).calculate_metric(_cold_struct([(1, 1, .9), (7, 0, .1)]))
    assert result["none_rows"] == 1 and "its 1 evaluated rows all have label 0" in caplog.text
    # an evaluation without rows: every share is NaN, not a division by zero
    empty = _cold(buckets={"none": 0}).calculate_metric(_cold_struct([]))
    assert empty["none_rows"] == 0 and math.isnan(empty["none"]) and math.isnan(empty["none_share"])


@pytest.mark.parametrize("buckets, extra, message", [
    ({"coldauc": {"max_count": -1}}, {}, "integer N >= 0"),
    ({"coldauc": {"max_count": 3, "count": "most"}}, {}, "cold_count must be one of"),
    ({"coldauc": {"threshold": 30}}, {}, "must be {max_count: N}"),
    ({"auc": 5}, {}, "must not be another metric's name"),
    ({"Cold-AUC": 5}, {}, "must be lower-case letters"),
    ({"coldauc": {"max_count": 3, "bogus": 1}}, {}, "must be {max_count: N}"),
    ({"coldauc": {"max_count": True}}, {}, "integer N >= 0"),
    ({"coldauc": {"max_count": "3"}}, {}, "integer N >= 0"),
    ({"coldauc": 2.5}, {}, "must be {max_count: N}"),
    ({"coldauc": []}, {}, "must be {max_count: N}"),
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
    # a config without the key (e.g. a user's own yaml stack) gets the documented defaults
    assert [(b.name, b.max_count, b.count) for b in cold_buckets(_Cfg())] == \
        [("coldauc", 29, "all"), ("coldauc_strict", 5, "all"), ("coldauc_unseen", 0, "all")]


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


def test_user_auc_skips_one_class_users_and_counts_a_single_negative():
    users = [1, 1, 2, 2, 3, 3, 3]
    label = [0, 0, 1, 0, 1, 1, 0]
    score = [0.4, 0.2, 0.9, 0.1, 0.3, 0.8, 0.5]
    # user 1: negatives only -> skipped; user 2: one pair, won -> 1 (2 rows);
    # user 3: positives .3, .8 vs negative .5 -> 1/2 (3 rows)
    value, used, skipped = user_auc(score, label, users)
    assert (used, skipped) == (2, 1)
    assert value == pytest.approx((2 * 1.0 + 3 * 0.5) / 5)
    value, used, skipped = user_auc([0.1, 0.2, 0.3], [1, 1, 0], [1, 1, 2])
    assert math.isnan(value) and (used, skipped) == (0, 2)


def test_user_auc_metric_without_a_usable_user_is_nan_with_a_warning(caplog):
    metric = UserAUC(_Cfg(metric_decimal_place=6))
    with caplog.at_level("WARNING"):
        result = metric.calculate_metric(_struct(rec_score=[0.1, 0.2, 0.3], data_label=[1, 1, 0],
                                                 data_uid=[1, 1, 2]))
    assert math.isnan(result["userauc"])
    assert "UserAUC: no evaluated user has both labels; UserAUC is NaN." in caplog.text


def test_metrics_are_registered_without_touching_recboles_gauc():
    from recbole.evaluator.register import metric_types, metrics_dict
    from recbole.utils import EvaluatorType

    assert metrics_dict["coldauc"] is ColdAUC and metrics_dict["userauc"] is UserAUC
    assert metric_types["coldauc"] == metric_types["userauc"] == EvaluatorType.VALUE
    assert metric_types["gauc"] == EvaluatorType.RANKING  # RecBole's GAUC is unchanged
    config = quick_start.build_config("DeepFM", overrides={"sid_modalities": []})
    assert [m.lower() for m in config["metrics"]] == ["auc", "coldauc", "userauc", "logloss"]
    assert config["eval_type"] == EvaluatorType.VALUE


def test_install_registers_the_metrics_and_wraps_each_recbole_method_once(monkeypatch):
    """install() runs at import; called again (here on pristine copies) it must register the metrics
    and wrap each RecBole method exactly once: a second wrapper would collect every id twice."""
    from recbole.data.dataset import Dataset
    from recbole.evaluator import register
    from recbole.evaluator.collector import Collector
    from recbole.trainer.trainer import Trainer

    from recbole_psrq import evaluation

    for name in ("metrics_dict", "metric_types", "metric_information", "smaller_metrics"):
        pristine = {k: v for k, v in getattr(register, name).items() if k not in evaluation.METRICS} \
            if isinstance(getattr(register, name), dict) else list(getattr(register, name))
        monkeypatch.setattr(register, name, pristine)
    methods = [(Collector, "data_collect"), (Collector, "eval_batch_collect"), (Collector, "get_data_struct"),
               (Dataset, "build"), (Trainer, "evaluate")]
    originals = {}
    for owner, name in methods:
        originals[name] = getattr(owner, name).__wrapped__  # RecBole's own method under our wrapper
        monkeypatch.setattr(owner, name, originals[name])
    evaluation.install()
    evaluation.install()
    for name, cls in evaluation.METRICS.items():
        assert register.metrics_dict[name] is cls
        assert register.metric_types[name] == cls.metric_type
        assert register.metric_information[name] == cls.metric_need
    assert "coldauc" not in register.smaller_metrics and "userauc" not in register.smaller_metrics
    for owner, name in methods:
        method = getattr(owner, name)
        assert method._psrq_wrapped and method.__wrapped__ is originals[name], name


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
    assert train_item_counts(split).tolist() == [0, 2, 1, 3, 0]  # the default counts every row
    unlabelled = _Split([1, 1, 2], [1.0, 0.0, 1.0])
    del unlabelled.inter_feat.interaction["label"]  # LABEL_FIELD configured, column not loaded
    assert train_item_counts(unlabelled, "positive").tolist() == [0, 2, 1, 0, 0]
    with pytest.raises(ConfigError, match="cold_count"):
        train_item_counts(split, "most")


def test_every_split_reports_the_training_splits_counts():
    """Dataset.build attaches the training split's counts to every split; a split without them is
    counted itself. The collector gets one row per cold_count mode, in COLD_COUNT_MODES order."""
    from recbole_psrq import evaluation

    train, test = _Split([1, 1, 2], [1.0, 0.0, 1.0]), _Split([3], [1.0])
    attached = {mode: train_item_counts(train, mode) for mode in evaluation.COLD_COUNT_MODES}
    setattr(test, evaluation._SPLIT_COUNTS_ATTR, attached)
    assert evaluation.split_train_item_counts(test, "positive").tolist() == [0, 1, 1, 0, 0]
    assert evaluation.split_train_item_counts(test).tolist() == [0, 2, 1, 0, 0]
    unattached = _Split([3, 3], [1.0, 0.0])  # e.g. a dataset not made by build: counted itself
    assert evaluation.split_train_item_counts(unattached, "positive").tolist() == [0, 0, 0, 1, 0]

    class Collector:
        data_struct = _struct()

    evaluation._set_counts(Collector, attached)
    stacked = Collector.data_struct.get("data.train_item_count")
    assert stacked.dtype == torch.int64 and stacked.tolist() == [[0, 2, 1, 0, 0], [0, 1, 1, 0, 0]]


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


@pytest.mark.slow
def test_cold_count_positive_end_to_end_and_on_checkpoint_reevaluation(tmp_path, workdir, monkeypatch):
    """``cold_count: positive`` through quick_start.run and quick_start.evaluate_checkpoint: the buckets count
    label-1 training rows (computed here from the training split and the scores the test rows got), which
    moves rows into the buckets on this data, and the checkpoint re-evaluation reports the same values."""
    from tests.conftest import same_metrics
    from tests.test_mcca import EvaluationSpy, assert_metrics_close, ctr_metrics_by_hand

    data_path = write_sid_dataset(tmp_path / "data")
    result = quick_start.run("DeepFM", overrides=sid_overrides(data_path, cold_count="positive"))
    spy = EvaluationSpy(monkeypatch)
    again = quick_start.evaluate_checkpoint(result["checkpoint"])
    assert same_metrics(again, result["test_result"])
    assert_metrics_close(again, ctr_metrics_by_hand(spy, cold_count="positive"))
    # on this data some test rows' items have more than 5 (29) training rows but at most 5 (29) positive
    # ones: those rows must be in the positive-count buckets and not in the all-rows ones
    by_all = ctr_metrics_by_hand(spy, cold_count="all")
    items = spy.rows()[3]
    counts_all, counts_positive = spy.train_counts("all"), spy.train_counts("positive")
    for name, max_count in (("coldauc", 29), ("coldauc_strict", 5)):
        moved = int(((counts_all[items] > max_count) & (counts_positive[items] <= max_count)).sum())
        assert again[f"{name}_rows"] == by_all[f"{name}_rows"] + moved
        if name == "coldauc_strict":
            assert moved > 0
    assert again["coldauc_unseen_rows"] == by_all["coldauc_unseen_rows"]  # count: all, whatever cold_count says
