"""One protocol for every model: the same candidate rows (test digest), positive-only histories, and
the checks that stop a run when they do not hold (recbole_psrq/data/dataset.py, data/history.py)."""
import hashlib
import importlib
import pathlib
import re

import numpy as np
import pytest
from recbole.data import data_preparation

from recbole_psrq import quick_start
from recbole_psrq.data import dataset as project_datasets
from recbole_psrq.data import history
from recbole_psrq.data.dataset import PROJECT_DATASETS, ProtocolMixin, SIDFieldsMixin, recbole_dataset_class
from recbole_psrq.errors import ConfigError, DataFormatError


def _mpd_like(root, n_users=40, n_items=60, positives=10, seed=0, first_time=0, reverse=False):
    """MPD's layout: each positive row is followed by its sampled label-0 row (time + 1). Times start at
    ``first_time``; ``reverse`` writes the rows in the opposite order (a file not sorted by time)."""
    rng = np.random.default_rng(seed)
    folder = root / "mpdlike"
    folder.mkdir(parents=True)
    lines = []
    for user in range(n_users):
        items = rng.choice(n_items, size=2 * positives, replace=False)
        for k in range(positives):
            lines.append(f"p{user}\tt{items[k]}\t{first_time + 2 * k}\t1")
            lines.append(f"p{user}\tt{items[positives + k]}\t{first_time + 2 * k + 1}\t0")
    header = "user_id:token\titem_id:token\ttimestamp:float\tlabel:float"
    (folder / "mpdlike.inter").write_text("\n".join([header] + (lines[::-1] if reverse else lines)) + "\n")
    return str(root)


@pytest.fixture
def mpd_like(tmp_path):
    return _mpd_like(tmp_path / "data")


def _config(model, data_path, **extra):
    return quick_start.build_config(model, dataset="mpdlike", overrides={
        "data_path": data_path, "load_col": {"inter": ["user_id", "item_id", "timestamp", "label"]}, **extra})


def _build(model, data_path, **extra):
    """The model's dataset and its test split, built as quick_start.run builds them."""
    config = _config(model, data_path, **extra)
    data = quick_start.create_dataset(config)
    _, _, test = data_preparation(config, data)
    return data, test._dataset


def _entries(inter):
    items = inter["item_id_list"].numpy()
    return (np.arange(items.shape[1])[None, :] < inter["item_length"].numpy()[:, None]) & (items > 0)


def _last_history_label_auc(inter):
    """AUC of 'the label of the row's last history entry' as a score for the row's label."""
    from recbole_psrq.evaluation import binary_auc

    entries = _entries(inter)
    has = entries.any(axis=1)
    last = inter["label_list"].numpy()[has, entries[has].sum(axis=1) - 1]
    return binary_auc(1 - last, inter["label"].numpy()[has])


def test_dien_scores_the_same_rows_as_din_and_its_histories_hold_no_label(mpd_like, workdir):
    din, din_test = _build("DIN", mpd_like)
    dien, dien_test = _build("DIEN", mpd_like)
    deepfm, _ = _build("DeepFM", mpd_like)
    assert dien.protocol_report["test_digest"] == din.protocol_report["test_digest"] \
        == deepfm.protocol_report["test_digest"]
    assert dien.protocol_report["test_rows"] == din.protocol_report["test_rows"] == len(din_test)
    assert dien.protocol_report["checks"] == {"history_before_target": "passed",
                                              "history_positive_only": "passed",
                                              "every_row_a_candidate": "passed"}
    inter = dien.inter_feat
    assert (inter["label_list"].numpy()[_entries(inter)] == 1).all()
    # the previous row's label no longer gives the target's away (RecBole's DIENDataset: AUC 1.0)
    assert _last_history_label_auc(inter) == 0.5
    # an empty history is the padding item with length 1 (DIEN's GRU rejects length 0)
    empty = ~_entries(inter).any(axis=1)
    assert empty.sum() == 40 and (inter["item_length"][empty] == 1).all()
    assert (inter["item_id_list"][empty] == 0).all()


def test_recboles_own_dien_dataset_leaks_the_label(mpd_like, workdir):
    # why the project builds DIEN's data itself: RecBole's history is every earlier row
    recbole_dien = importlib.import_module("recbole.data.dataset").DIENDataset
    config = _config("DIEN", mpd_like)
    data = recbole_dien(config)
    _, _, test = data_preparation(config, data)
    assert _last_history_label_auc(data.inter_feat) == 1.0
    din, _ = _build("DIN", mpd_like)
    assert len(test._dataset) != din.protocol_report["test_rows"]


def test_dien_negatives_are_outside_the_users_positives_so_far(mpd_like, workdir):
    dien, _ = _build("DIEN", mpd_like)
    inter = dien.inter_feat
    entries = _entries(inter)
    negatives = inter["neg_item_id_list"].numpy()
    assert (negatives[entries] > 0).all() and (negatives[~entries] == 0).all()
    users, times = inter["user_id"].numpy(), inter["timestamp"].numpy()
    items, labels = inter["item_id"].numpy(), inter["label"].numpy()
    history_times = inter["timestamp_list"].numpy()
    for row, position in np.argwhere(entries):  # never a positive of the user up to that history row
        seen = items[(users == users[row]) & (labels == 1) & (times <= history_times[row, position])]
        assert negatives[row, position] not in seen
    again, _ = _build("DIEN", mpd_like)
    assert np.array_equal(again.inter_feat["neg_item_id_list"].numpy(), negatives)  # seeded


def test_every_model_with_a_recbole_dataset_class_of_its_own_gets_the_protocol():
    recbole_datasets = importlib.import_module("recbole.data.dataset")
    own = set()
    for name, model_class in quick_start.recbole_models().items():
        chosen = recbole_dataset_class(name, model_class.type)
        assert chosen in PROJECT_DATASETS, f"{name} -> {chosen}"
        project = PROJECT_DATASETS[chosen]
        assert issubclass(project, getattr(recbole_datasets, chosen)), name
        assert issubclass(project, ProtocolMixin) and issubclass(project, SIDFieldsMixin)
        if chosen == name + "Dataset":
            own.add(name)
    assert own == {"DIEN", "KSR", "GRU4RecKG"}


def test_a_model_specific_class_the_project_does_not_know_is_an_error(monkeypatch):
    config = quick_start.build_config("DIN", overrides={"sid_modalities": []})
    monkeypatch.setattr(project_datasets, "recbole_dataset_class", lambda *a: "NewModelDataset")
    with pytest.raises(ConfigError, match="NewModelDataset, which has behaviour of its own"):
        project_datasets.create_dataset(config)


def _planted(monkeypatch, plant):
    original = history.positive_history_index

    def leaky(uids, positive, max_len, times=None):
        return plant(original, np.asarray(uids), np.asarray(positive), max_len, times)

    monkeypatch.setattr(history, "positive_history_index", leaky)


def test_a_future_row_in_a_history_stops_the_run(mpd_like, workdir, monkeypatch):
    def target_in_own_history(original, uids, positive, max_len, times):
        index, valid, length = original(uids, positive, max_len, times)
        index[valid[:, 0], 0] = np.flatnonzero(valid[:, 0])
        return index, valid, length

    _planted(monkeypatch, target_in_own_history)
    with pytest.raises(DataFormatError) as error:
        _build("DIN", mpd_like)
    message = str(error.value)
    assert "Protocol check 'history_before_target' failed" in message
    assert "e.g. the row (user p" in message and "whose history position 0 holds item t" in message
    assert "\n" not in message


def test_a_label_0_row_in_a_history_stops_the_run(mpd_like, workdir, monkeypatch):
    _planted(monkeypatch, lambda original, uids, positive, max_len, times:
             original(uids, np.ones_like(positive), max_len, times))
    with pytest.raises(DataFormatError, match=r"Protocol check 'history_positive_only' failed: \d+ history "
                                              r"entries .* with label 0\.0\. Under the ctr protocol"):
        _build("DIEN", mpd_like)


def test_all_row_histories_under_ctr_stop_the_run(mpd_like, workdir):
    with pytest.raises(DataFormatError, match="'history_positive_only' failed"):
        _build("DIN", mpd_like, history_positive_only=False)


# the example row is one that was dropped (each user's first rows, whose history is empty), also where the
# loaded times are no float32 numbers (ranked, shown as the file writes them) and the first row of the file
# (the last user's last) was kept
@pytest.mark.parametrize("first_time, shown_time, reverse", [(0, "0.0", False), (0.1, "0.1", True)])
def test_dropping_candidate_rows_stops_the_run(tmp_path, workdir, first_time, shown_time, reverse):
    data_path = _mpd_like(tmp_path / "data", first_time=first_time, reverse=reverse)
    with pytest.raises(ConfigError, match=r"'every_row_a_candidate' failed: 40 of the 800 loaded rows of "
                                          r"'mpdlike' are no candidate row, e\.g\. \(user_id p\d+, item_id t\d+, "
                                          rf"timestamp {re.escape(shown_time)}\)\..*history_min_length must be 0 "
                                          r"or unset \(it is 1;.* history_positive_only True \(it is True\)\.$"):
        _build("DIEN", data_path, history_min_length=1)


# Both protocols order each user's rows by time and read the 0/1 label (ctr: the target; top-k: which rows are
# positives). Unchecked, a missing time column was pandas' KeyError from ProtocolMixin.build, a missing label
# under top-k RecBole's "Field [label] not defined", and DeepFM built without a label (failing in training).
@pytest.mark.parametrize("model, column", [("DIN", "timestamp"), ("SASRec", "timestamp"), ("SASRec", "label"),
                                           ("DeepFM", "label")])
def test_interactions_without_the_time_or_label_column_are_a_clear_error(mpd_like, workdir, model, column):
    loaded = [c for c in ("user_id", "item_id", "timestamp", "label") if c != column]
    with pytest.raises((ConfigError, DataFormatError), match=rf"'{column}'.*load_col"):
        _build(model, mpd_like, load_col={"inter": loaded})


def _rows_and_histories(data, test):
    """{(user, item, label): history item tokens} of the built rows, and the test split's (user, item)s."""
    inter, token = data.inter_feat, data.field2id_token
    keys = list(zip(token["user_id"][inter["user_id"].numpy()], token["item_id"][inter["item_id"].numpy()],
                    inter["label"].numpy().tolist()))
    histories = [tuple(token["item_id"][row[:length]]) for row, length in
                 zip(inter["item_id_list"].numpy(), inter["item_length"].numpy())]
    test_rows = set(zip(token["user_id"][test.inter_feat["user_id"].numpy()],
                        token["item_id"][test.inter_feat["item_id"].numpy()]))
    return dict(zip(keys, histories)), test_rows


# RecBole stores float fields as float32, exact up to 2**24 (194 days in seconds): unrounded, unix-second
# times fall into 128 s steps, equal times fall back to the file's row order and share no history
UNIX_SECONDS = 1_600_000_000  # 2020-09-13, as the Music4All, Amazon, Last.fm and LFM converters write times


def test_unix_second_times_in_a_file_not_sorted_by_time_split_like_small_times(tmp_path, workdir):
    small = _rows_and_histories(*_build("DIN", _mpd_like(tmp_path / "small", reverse=True)))
    unix = _rows_and_histories(*_build("DIN", _mpd_like(tmp_path / "unix", first_time=UNIX_SECONDS,
                                                         reverse=True)))
    assert unix[1] == small[1]  # each user's last two rows are the test rows


def test_unix_second_times_keep_the_histories_of_small_times(tmp_path, workdir):
    small = _rows_and_histories(*_build("DIN", _mpd_like(tmp_path / "small")))
    unix = _rows_and_histories(*_build("DIN", _mpd_like(tmp_path / "unix", first_time=UNIX_SECONDS)))
    assert unix[1] == small[1]  # a file sorted by user and time (every converter's output) splits right
    assert unix[0] == small[0]


def test_ranked_times_are_said_and_digested_as_the_file_writes_them(tmp_path, workdir, caplog):
    data_path = _mpd_like(tmp_path / "data", first_time=UNIX_SECONDS)
    with caplog.at_level("INFO"):
        din, test = _build("DIN", data_path)
    assert ("timestamp: 20 distinct times that float32 (RecBole's float fields) cannot all hold exactly, "
            "replaced by their rank 0-19 (order and ties kept)") in caplog.messages
    stored = test.inter_feat["timestamp"].numpy()
    assert set(stored.tolist()) == {18.0, 19.0}  # every user's last two rows: ranks, exact in float32
    assert set(project_datasets.file_times(din, stored).tolist()) == {UNIX_SECONDS + 18.0, UNIX_SECONDS + 19.0}
    # the digest hashes the file's times: the same rows written with times float32 holds digest alike
    lines = (tmp_path / "data" / "mpdlike" / "mpdlike.inter").read_text().splitlines()
    exact = tmp_path / "exact" / "mpdlike"
    exact.mkdir(parents=True)
    (exact / "mpdlike.inter").write_text("\n".join([lines[0]] + [
        "\t".join([u, i, str(float(t) - UNIX_SECONDS), y]) for u, i, t, y in (r.split("\t") for r in lines[1:])]))
    shifted, _ = _build("DIN", str(tmp_path / "exact"))
    assert shifted.time_ranks_of is None
    assert din.protocol_report["test_digest"] != shifted.protocol_report["test_digest"]
    rows = sorted(zip(test.field2id_token["user_id"][test.inter_feat["user_id"].numpy()],
                      test.field2id_token["item_id"][test.inter_feat["item_id"].numpy()],
                      [repr(UNIX_SECONDS + float(t)) for t in stored],
                      [repr(float(v)) for v in test.inter_feat["label"].numpy()]))
    assert din.protocol_report["test_digest"] == hashlib.sha256(
        "\n".join(sorted("\t".join(r) for r in rows)).encode()).hexdigest()


def test_more_distinct_times_than_float32_ranks_hold_is_a_clear_error(tmp_path, workdir, monkeypatch):
    limit = project_datasets.MAX_RANKED_TIMES
    assert float(np.float32(limit - 1)) == limit - 1 and float(np.float32(limit)) != limit
    data_path = _mpd_like(tmp_path / "data", first_time=UNIX_SECONDS)  # 20 distinct times
    monkeypatch.setattr(project_datasets, "MAX_RANKED_TIMES", 20)
    assert _build("DIN", data_path)[0].time_ranks_of is not None  # as many as the ranks hold: ranked
    monkeypatch.setattr(project_datasets, "MAX_RANKED_TIMES", 19)
    with pytest.raises(DataFormatError, match=r"mpdlike\.inter: 'timestamp' has 20 distinct times; RecBole stores "
                                              r"times as float32, which holds at most 19 distinct ranks exactly: "
                                              r"coarsen the times \(e\.g\. to minutes\)\.$"):
        _build("DIN", data_path)


@pytest.mark.parametrize("row, error", [
    ("p0\tt1\tnan\t1", r"mpdlike\.inter, data row 801 \(line 802\): 'timestamp' is nan \(1 such rows\); RecBole "
                        r"would fill in the column's mean\. Write each row's time\.$"),
    ("p0\tt1\tinf\t1", r"data row 801 \(line 802\): 'timestamp' is inf")])
def test_a_time_that_is_no_number_names_its_row(mpd_like, workdir, row, error):
    inter = pathlib.Path(mpd_like) / "mpdlike" / "mpdlike.inter"
    inter.write_text(inter.read_text() + row + "\n")
    with pytest.raises(DataFormatError, match=error):
        _build("DIN", mpd_like)


@pytest.mark.parametrize("key", ["TIME_FIELD", "LABEL_FIELD"])
def test_an_unset_time_or_label_field_is_a_clear_error(mpd_like, workdir, key):
    with pytest.raises(ConfigError, match=rf"^{key} is unset; the protocol orders each user's rows by time and reads "
                                          rf"their 0/1 label, so set {key} to a column of .*mpdlike\.inter\.$"):
        _build("DIN", mpd_like, **{key: None})


def test_a_time_declared_as_a_token_is_a_clear_error(mpd_like, workdir):
    inter = pathlib.Path(mpd_like) / "mpdlike" / "mpdlike.inter"
    inter.write_text(inter.read_text().replace("timestamp:float", "timestamp:token", 1))
    with pytest.raises(DataFormatError, match=r"mpdlike\.inter: column 'timestamp' \(TIME_FIELD\) is declared "
                                              r"token; the protocol reads it as a number: declare it "
                                              r"'timestamp:float' in the header\.$"):
        _build("SASRec", mpd_like)


def test_a_label_the_file_lacks_names_the_files_columns(tmp_path, workdir):
    data_path = _mpd_like(tmp_path / "data")
    inter = tmp_path / "data" / "mpdlike" / "mpdlike.inter"
    inter.write_text("\n".join(",".join(r.split("\t")[:3]) for r in inter.read_text().splitlines()) + "\n")
    with pytest.raises(DataFormatError, match=r"mpdlike\.inter has no column 'label' \(LABEL_FIELD\); its "
                                              r"columns are \['user_id', 'item_id', 'timestamp'\]\. The protocol"):
        _build("DeepFM", data_path, field_separator=",", load_col=None)


def test_a_comma_separated_file_with_the_time_left_out_of_load_col(tmp_path, workdir):
    data_path = _mpd_like(tmp_path / "data")
    inter = tmp_path / "data" / "mpdlike" / "mpdlike.inter"
    inter.write_text(inter.read_text().replace("\t", ","))
    with pytest.raises(DataFormatError, match=r"mpdlike\.inter: column 'timestamp' \(TIME_FIELD\) is not loaded "
                                              r"\(load_col's inter columns: \['user_id', 'item_id', 'label'\]\); "
                                              r".* add 'timestamp' to load_col\.$"):
        _build("DIN", data_path, field_separator=",", load_col={"inter": ["user_id", "item_id", "label"]})


def test_digest_is_of_raw_rows_and_changes_with_a_test_row(mpd_like, workdir, tmp_path):
    din, test = _build("DIN", mpd_like)
    first = din.protocol_report["test_digest"]
    assert din.protocol_report["test_rows"] == 80
    # pinned: a table's runs may come from several commits (the MPD study's from four) and are held to one
    # digest, so how the rows are written into it must not change
    assert first == "5518f67c17e8dc5708a4d7c18cd3dbbdf9953d726e6da17672e811e366fbe124"
    assert project_datasets.rows_digest(test) == first
    # the same rows under other remapped ids (another file order) give the same digest
    inter = tmp_path / "data" / "mpdlike" / "mpdlike.inter"
    header, *rows = inter.read_text().splitlines()
    inter.write_text("\n".join([header] + rows[::-1]) + "\n")
    assert _build("DIN", mpd_like)[0].protocol_report["test_digest"] == first
    # a user's last row (a test row) with another label gives another digest
    rows = inter.read_text().splitlines()
    user, item, time, label = rows[1].split("\t")
    assert time == "19"
    rows[1] = "\t".join([user, item, time, "1"])
    inter.write_text("\n".join(rows) + "\n")
    assert _build("DIN", mpd_like)[0].protocol_report["test_digest"] != first


def test_topk_records_the_digest_without_the_ctr_checks(mpd_like, workdir):
    data, _ = _build("SASRec", mpd_like)
    assert data.protocol_report["checks"] == {} and data.protocol_report["test_rows"] == 40


@pytest.mark.slow
def test_user_fraction_keeps_the_same_users_with_all_their_rows(tiny_data_path, workdir):
    from recbole_psrq import quick_start

    def users(model, fraction):
        config = quick_start.build_config(model, overrides={"data_path": tiny_data_path,
                                                            "user_fraction": fraction})
        data = quick_start.create_dataset(config)
        inter = data.inter_feat
        tokens = data.field2id_token[data.uid_field][np.asarray(inter[data.uid_field])]
        return data, set(tokens), len(inter)

    full, all_users, all_rows = users("DeepFM", None)
    half, kept, rows = users("DeepFM", 0.5)
    assert 0.3 * len(all_users) < len(kept) < 0.7 * len(all_users) and kept < all_users
    _, kept_din, rows_din = users("DIN", 0.5)
    assert kept_din == kept and rows_din == rows  # the same users, whatever the model
    inter = full.inter_feat
    tokens = full.field2id_token[full.uid_field][np.asarray(inter[full.uid_field])]
    assert rows == sum(t in kept for t in tokens)  # every row of a kept user stays
    with pytest.raises(ConfigError, match="user_fraction"):
        users("DeepFM", 1.5)


def _split_rows(config_model, data_path, **extra):
    """The built dataset and its train, valid and test splits, each as sorted (user, item, label) rows."""
    config = _config(config_model, data_path, **extra)
    data = quick_start.create_dataset(config)
    train, valid, test = data_preparation(config, data)

    def rows(loader):
        inter, token = loader._dataset.inter_feat, data.field2id_token
        return sorted(zip(token["user_id"][inter["user_id"].numpy()], token["item_id"][inter["item_id"].numpy()],
                          inter["label"].numpy().tolist()))
    return data, rows(train), rows(valid), rows(test)


@pytest.mark.parametrize("model", ["SASRec", "DIN"])
def test_valid_user_fraction_validates_on_a_fixed_user_subset_and_keeps_train_and_test(mpd_like, workdir,
                                                                                       model):
    full, train, valid, test = _split_rows(model, mpd_like)
    part, train_part, valid_part, test_part = _split_rows(model, mpd_like, valid_user_fraction=0.5)
    users = {row[0] for row in valid}
    kept = project_datasets.hashed_users(users, 0.5, "valid_user_fraction")
    assert 0 < len(kept) < len(users)
    # every validation row of a kept user, and no other row (the test rows are of the same users)
    assert valid_part == [row for row in valid if row[0] in kept]
    assert train_part == train and test_part == test
    assert part.protocol_report["test_digest"] == full.protocol_report["test_digest"]
    # nested: a smaller fraction validates on a subset of a larger one's users
    smaller = project_datasets.hashed_users(users, 0.25, "valid_user_fraction")
    assert smaller <= kept
    assert _split_rows(model, mpd_like, valid_user_fraction=1)[1:] == (train, valid, test)


def test_a_valid_user_fraction_that_keeps_no_user_is_a_config_error(mpd_like, workdir):
    with pytest.raises(ConfigError, match=r"^valid_user_fraction 0\.01 keeps none of the 40 validation users of "
                                          r"'mpdlike'; use a larger fraction\.$"):
        _split_rows("SASRec", mpd_like, valid_user_fraction=0.01)


@pytest.mark.parametrize("value", [0, 1.5, "half", True])
def test_a_bad_valid_user_fraction_is_a_config_error(mpd_like, workdir, value):
    with pytest.raises(ConfigError, match=r"^valid_user_fraction must be a number in \(0, 1\], got "):
        _split_rows("SASRec", mpd_like, valid_user_fraction=value)
