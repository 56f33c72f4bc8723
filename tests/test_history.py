import numpy as np
import pytest
import torch
from recbole.data.dataset import SequentialDataset

from recbole_psrq import quick_start
from recbole_psrq.data.history import PositiveHistoryMixin, check_histories, positive_history_index
from recbole_psrq.errors import ConfigError, DataFormatError


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


def test_positive_history_index_edges():
    # a tie at the very first rows; row 5's history reaches the data's last positive row (4)
    uids = np.array([1, 1, 1, 2, 2, 2])
    positive = np.array([1, 1, 1, 1, 1, 0], dtype=bool)
    times = np.array([5, 5, 6, 1, 2, 3])
    index, valid, length = positive_history_index(uids, positive, 3, times)
    assert length.tolist() == [0, 0, 2, 0, 1, 2]
    assert index[2][valid[2]].tolist() == [0, 1] and index[5][valid[5]].tolist() == [3, 4]
    assert index.dtype == np.int64 and (index[~valid] == 0).all()  # documented: 0 where invalid
    index, valid, length = positive_history_index(uids, np.zeros(6, dtype=bool), 2, times)
    assert index.shape == (6, 2) and index.dtype == np.int64 and not index.any() and not valid.any()


def test_rows_sharing_a_timestamp_are_kept_apart_in_a_built_dataset(tmp_path):
    # u1: a1 (t 10, +), a2 (t 20, +), a3 (t 20, -), a4 (t 30, +): a2 and a3 never see each other
    folder = tmp_path / "data" / "histtoy"
    folder.mkdir(parents=True)
    (folder / "histtoy.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\tlabel:float\n"
        "u1\ta1\t10\t1\nu1\ta2\t20\t1\nu1\ta3\t20\t0\nu1\ta4\t30\t1\n")
    got = _histories(_dataset(str(tmp_path / "data"), MAX_ITEM_LIST_LENGTH=3))
    assert got == {("u1", "a1"): [], ("u1", "a2"): ["a1"], ("u1", "a3"): ["a1"], ("u1", "a4"): ["a1", "a2"]}


class _Built:
    """What check_histories reads from a built sequential dataset: 3 rows of user 1 at times 10, 20, 30,
    histories of at most 2 entries (item, time, label)."""

    dataset_name, uid_field, iid_field, time_field = "toy", "user_id", "item_id", "timestamp"
    item_list_length_field, item_id_list_field = "item_length", "item_id_list"
    timestamp_list_field, label_list_field = "timestamp_list", "label_list"
    config = {"LABEL_FIELD": "label"}

    def __init__(self, histories):
        from recbole.data.interaction import Interaction

        pad = [h + [(0, 0.0, 0.0)] * (2 - len(h)) for h in histories]
        self.inter_feat = Interaction({
            "user_id": torch.tensor([1, 1, 1]), "item_id": torch.tensor([7, 8, 9]),
            "timestamp": torch.tensor([10.0, 20.0, 30.0]), "label": torch.tensor([1.0, 0.0, 1.0]),
            "item_length": torch.tensor([len(h) for h in histories]),
            "item_id_list": torch.tensor([[e[0] for e in h] for h in pad]),
            "timestamp_list": torch.tensor([[e[1] for e in h] for h in pad]),
            "label_list": torch.tensor([[e[2] for e in h] for h in pad])})

    @staticmethod
    def id2token(field, index):
        return f"{field[0]}{index}"


def test_check_histories_names_the_first_bad_entry_and_counts_the_rows():
    assert check_histories(_Built([[], [(7, 10.0, 1.0)], [(7, 10.0, 1.0)]])) == \
        {"history_before_target": "passed", "history_positive_only": "passed"}
    # rows 1 and 2 each hold item 1 with label 0 (item 1: the lowest real id, 0 is padding)
    bad = _Built([[], [(1, 15.0, 0.0)], [(7, 10.0, 1.0), (1, 15.0, 0.0)]])
    with pytest.raises(DataFormatError) as error:
        check_histories(bad)
    message = str(error.value)
    assert "Protocol check 'history_positive_only' failed: 2 history entries in 2 of 3 rows of 'toy'" in message
    assert "e.g. the row (user u1, item i8, time 20.0, label 0.0), whose history position 0 holds item i1" \
        in message
    assert "The dataset class that built it (_Built)" in message


def test_dien_negatives_may_be_items_the_user_only_saw_as_negatives():
    from recbole_psrq.data.history import DIENHistoryMixin

    class Fake:  # what _complete_history reads; items 1..3, user 1: (1, +) (2, -) (3, +) (2, -)
        uid_field, iid_field, time_field = "user_id", "item_id", "timestamp"
        item_list_length_field, neg_item_list_field = "item_length", "neg_item_id_list"
        item_num, config = 4, {"LABEL_FIELD": "label", "seed": 0}
        inter_feat = {"user_id": torch.tensor([1, 1, 1, 1]), "item_id": torch.tensor([1, 2, 3, 2]),
                      "label": torch.tensor([1.0, 0.0, 1.0, 0.0]), "timestamp": torch.tensor([0.0, 1.0, 2.0, 3.0])}

    arrays = positive_history_index(np.ones(4), np.array([1, 0, 1, 0], dtype=bool), 2)
    index, valid, length = (torch.from_numpy(a) for a in arrays)
    lists = {"item_length": length.clone()}
    DIENHistoryMixin._complete_history(Fake(), lists, index, valid)
    negatives = lists["neg_item_id_list"]
    assert lists["item_length"].tolist() == [1, 1, 1, 2]  # an empty history becomes one padding entry
    assert (negatives[~valid] == 0).all() and set(negatives[valid].tolist()) <= {2, 3}
    # the last row's second entry is row 2 (item 3): the user then had positives 1 and 3, so its
    # negative is item 2, which the user has a label-0 row for (not a positive)
    assert negatives[3, 1].item() == 2


def test_runner_uses_positive_histories_for_sequential_ctr_models(hist_data):
    # no skip: if the project's dataset classes move, this must fail, not pass silently
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

    # user 1 has positives for items 1..4 (in time order) and one label-0 row; 6 items (ids 1..5);
    # user 4 has positives for items 2..5, so its last (label-0) row can only get item 1, the lowest id
    uids = np.array([1, 1, 1, 1, 1, 2, 4, 4, 4, 4, 4])
    items = np.array([1, 2, 5, 3, 4, 1, 2, 3, 4, 5, 2])
    positive = np.array([1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 0], dtype=bool)
    times = np.arange(11)
    runs = [sample_history_negatives(uids, items, positive, times, 6, seed=0) for _ in range(200)]
    assert all(np.array_equal(r, runs[0]) for r in runs)
    many = np.stack([sample_history_negatives(uids, items, positive, times, 6, seed=s) for s in range(300)])
    assert set(many[:, 0]) == {2, 3, 4, 5}           # row 0: item 1 is positive at that time
    assert set(many[:, 3]) == {4, 5}                 # row 3: items 1, 2, 3 are
    assert set(many[:, 4]) == {5}                    # row 4: only item 5 is left
    assert set(many[:, 1]) == {3, 4, 5}              # later positives (3, 4) may be a row's negative
    assert set(many[:, 6]) == {1, 3, 4, 5} and set(many[:, 10]) == {1}
    # uniform over the allowed items, the lowest id included: each ~75 of 300 (71 75 83 71 here)
    assert all(45 < (many[:, 6] == item).sum() < 105 for item in (1, 3, 4, 5))


def test_history_negatives_name_a_user_with_every_item_positive():
    from recbole_psrq.data.history import sample_history_negatives

    with pytest.raises(DataFormatError, match=r"user id 7 has a positive row for \(almost\) every one of the 2 "):
        sample_history_negatives(np.array([7, 7]), np.array([1, 2]), np.array([1, 1], dtype=bool),
                                 np.array([0, 1]), 3, seed=0)
