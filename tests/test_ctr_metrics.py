import math

import numpy as np
import pytest
import torch

import recbole_psrq.model  # noqa: F401  (registers the metrics)
from recbole_psrq import quick_start
from recbole_psrq.evaluation import (ColdAUC, UserAUC, binary_auc, cold_mask, train_item_counts,
                                     user_auc)
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


def test_cold_auc_equals_hand_computation():
    # training counts per item id: item 1 -> 40 (warm), 2 -> 29 (cold), 3 -> 30 (warm), 4 -> 0 (cold),
    # item 6 is beyond the count table (unseen in training: cold)
    counts = [0, 40, 29, 30, 0, 5]
    iids = [1, 2, 2, 3, 4, 4, 6, 1]
    label = [1, 1, 0, 0, 1, 0, 0, 0]
    score = [0.9, 0.7, 0.8, 0.1, 0.6, 0.2, 0.5, 0.3]
    assert cold_mask(iids, counts, 30).tolist() == [False, True, True, False, True, True, True, False]
    # cold rows: (2,1,.7) (2,0,.8) (4,1,.6) (4,0,.2) (6,0,.5)
    # positives .7, .6 vs negatives .8, .2, .5: .7 beats .2 .5 (2), .6 beats .2 .5 (2) -> 4/6
    metric = ColdAUC(_Cfg(metric_decimal_place=6, cold_item_threshold=30))
    struct = _struct(rec_score=score, data_label=label, data_iid=iids)
    struct.set("data.train_item_count", torch.tensor(counts))
    assert metric.calculate_metric(struct) == {"coldauc": round(4 / 6, 6)}
    # threshold 41: every row is cold -> plain AUC over all rows
    metric41 = ColdAUC(_Cfg(metric_decimal_place=6, cold_item_threshold=41))
    assert metric41.calculate_metric(struct)["coldauc"] == round(binary_auc(score, label), 6)


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
