import os

import numpy as np
import pytest
from recbole.data.dataset import SequentialDataset

from recbole_psrq import quick_start
from recbole_psrq.data.history import PositiveHistoryMixin, positive_history_index
from recbole_psrq.errors import ConfigError


class PositiveHistoryDataset(PositiveHistoryMixin, SequentialDataset):
    pass


# user -> [(item, label)] in time order
ROWS = {
    "u1": [("a1", 0), ("a2", 1), ("a3", 1), ("a4", 0), ("a5", 1), ("a6", 0), ("a7", 1)],
    "u2": [("b1", 1), ("b2", 0), ("b3", 1)],
    "u3": [("c1", 0), ("c2", 0)],
}


def _expected(max_len, rows=ROWS):
    """(user, target item) -> history items: earlier label-1 rows, the max_len most recent."""
    out = {}
    for user, seq in rows.items():
        for i, (item, _) in enumerate(seq):
            positives = [it for it, label in seq[:i] if label == 1]
            out[(user, item)] = positives[-max_len:] if max_len else []
    return out


@pytest.fixture
def hist_data(tmp_path):
    folder = tmp_path / "data" / "histtoy"
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float\tlabel:float"]
    t = 1000
    # interleave users in the file so the mixin has to sort
    for k in range(max(len(v) for v in ROWS.values())):
        for user, seq in ROWS.items():
            if k < len(seq):
                t += 1
                lines.append(f"{user}\t{seq[k][0]}\t{t + 100 * k}\t{seq[k][1]}")
    (folder / "histtoy.inter").write_text("\n".join(lines) + "\n")
    return str(tmp_path / "data")


def _dataset(data_path, **extra):
    overrides = {"data_path": data_path, "sid_modalities": [], "MAX_ITEM_LIST_LENGTH": 2,
                 "load_col": {"inter": ["user_id", "item_id", "timestamp", "label"]}, **extra}
    config = quick_start.build_config("DIN", dataset="histtoy", overrides=overrides)
    dataset = PositiveHistoryDataset(config)
    dataset.build()
    return dataset


def _histories(dataset):
    inter = dataset.inter_feat
    tok = dataset.id2token
    out = {}
    for row in range(len(inter)):
        user = tok("user_id", int(inter["user_id"][row]))
        item = tok("item_id", int(inter["item_id"][row]))
        n = int(inter["item_length"][row])
        seq = inter["item_id_list"][row]
        assert (seq[n:] == 0).all()
        out[(user, item)] = [tok("item_id", int(i)) for i in seq[:n]]
    return out


def test_ctr_protocol_enables_positive_histories():
    config = quick_start.build_config("DIN", overrides={"sid_modalities": []})
    assert config["history_positive_only"] is True


def test_history_holds_only_earlier_positive_rows_and_every_row_is_a_target(hist_data):
    dataset = _dataset(hist_data)
    got = _histories(dataset)
    assert got == _expected(2)
    # e.g. u1's rows 0 1 1 0 1 0 1 (a1..a7): a7's history is the two latest positives a3, a5
    assert got[("u1", "a7")] == ["a3", "a5"] and got[("u1", "a4")] == ["a2", "a3"]
    assert got[("u1", "a1")] == [] and got[("u3", "c2")] == []
    assert len(dataset.inter_feat) == sum(len(v) for v in ROWS.values())
    labels = dataset.inter_feat["label_list"]
    lengths = dataset.inter_feat["item_length"]
    for row in range(len(labels)):
        assert (labels[row, :lengths[row]] == 1).all()


def test_longer_limit_and_minimum_length(hist_data):
    assert _histories(_dataset(hist_data, MAX_ITEM_LIST_LENGTH=20)) == _expected(20)
    dropped = _histories(_dataset(hist_data, history_min_length=1))
    assert dropped == {k: v for k, v in _expected(2).items() if len(v) >= 1}


def test_switched_off_is_recboles_augmentation(hist_data):
    got = _histories(_dataset(hist_data, history_positive_only=False))
    # RecBole: all earlier rows (label 0 too), each user's first row is not a target
    assert got[("u1", "a4")] == ["a2", "a3"] and got[("u1", "a3")] == ["a1", "a2"]
    assert ("u1", "a1") not in got


def test_missing_label_field_is_a_config_error(hist_data):
    with pytest.raises(ConfigError, match="no label field"):
        _dataset(hist_data, load_col={"inter": ["user_id", "item_id", "timestamp"]})


def test_positive_history_index_on_arrays():
    uids = np.array([1, 1, 1, 2, 2, 3])
    positive = np.array([1, 0, 1, 1, 1, 0], dtype=bool)
    index, valid, length = positive_history_index(uids, positive, 1)
    assert length.tolist() == [0, 1, 1, 0, 1, 0]
    assert index[valid].tolist() == [0, 0, 3]
    _, _, none = positive_history_index(uids, np.zeros(6, dtype=bool), 3)
    assert none.tolist() == [0] * 6


@pytest.mark.skipif(not os.path.isfile(os.path.join(quick_start.PROJECT_ROOT, "recbole_psrq", "data",
                                                    "dataset.py")), reason="no project dataset classes")
def test_runner_uses_positive_histories_for_sequential_ctr_models(hist_data):
    from recbole_psrq.data.dataset import SIDSequentialDataset

    assert issubclass(SIDSequentialDataset, PositiveHistoryMixin)
    config = quick_start.build_config("DIN", dataset="histtoy", overrides={
        "data_path": hist_data, "sid_modalities": [], "MAX_ITEM_LIST_LENGTH": 2,
        "load_col": {"inter": ["user_id", "item_id", "timestamp", "label"]}})
    dataset = quick_start.create_dataset(config)
    dataset.build()
    assert _histories(dataset) == _expected(2)


def test_rows_sharing_a_timestamp_are_not_in_each_others_history():
    uids = np.array([1, 1, 1, 1, 2])
    positive = np.ones(5, dtype=bool)
    times = np.array([10, 20, 20, 30, 20])
    index, valid, length = positive_history_index(uids, positive, 3, times)
    assert length.tolist() == [0, 1, 1, 3, 0]
    assert index[2][valid[2]].tolist() == [0]  # not row 1, which has the same time
    assert index[3][valid[3]].tolist() == [0, 1, 2]


def test_history_negatives_avoid_the_users_positives_up_to_the_row_and_are_seeded():
    from recbole_psrq.data.history import sample_history_negatives

    # user 1 has positives for items 1..4 (in time order) and one label-0 row; 6 items (ids 1..5)
    uids = np.array([1, 1, 1, 1, 1, 2])
    items = np.array([1, 2, 5, 3, 4, 1])
    positive = np.array([1, 1, 0, 1, 1, 1], dtype=bool)
    times = np.arange(6)
    runs = [sample_history_negatives(uids, items, positive, times, 6, seed=0) for _ in range(200)]
    assert all(np.array_equal(r, runs[0]) for r in runs)
    many = np.stack([sample_history_negatives(uids, items, positive, times, 6, seed=s) for s in range(300)])
    assert set(many[:, 0]) == {2, 3, 4, 5}           # row 0: item 1 is positive at that time
    assert set(many[:, 3]) == {4, 5}                 # row 3: items 1, 2, 3 are
    assert set(many[:, 4]) == {5}                    # row 4: only item 5 is left
    assert set(many[:, 1]) == {3, 4, 5}              # later positives (3, 4) may be a row's negative


def test_history_negatives_name_a_user_with_every_item_positive():
    from recbole_psrq.data.history import sample_history_negatives
    from recbole_psrq.errors import DataFormatError

    with pytest.raises(DataFormatError, match="user id 7 has a positive row for"):
        sample_history_negatives(np.array([7, 7]), np.array([1, 2]), np.array([1, 1], dtype=bool),
                                 np.array([0, 1]), 3, seed=0)
