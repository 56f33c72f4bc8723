"""``python -m recbole_psrq.sid``: end to end on tiny files, and its bad-input messages."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from recbole_psrq.data.embeddings import save_item_embeddings
from recbole_psrq.sid import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 300


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny embeddings (4 Gaussian clusters in 12-d), ids, and labels in the three formats."""
    root = tmp_path_factory.mktemp("sid")
    rng = np.random.default_rng(0)
    genre = rng.integers(0, 4, N)
    X = (rng.normal(size=(4, 12))[genre] + 0.3 * rng.normal(size=(N, 12))).astype(np.float32)
    ids = [f"song{i}" for i in range(N)]
    np.save(root / "X.npy", X)
    (root / "ids.txt").write_text("\n".join(ids) + "\n")
    # header line + labels for all but the last 5 items, in shuffled order (joined by id)
    order = rng.permutation(N - 5)
    (root / "labels.tsv").write_text(
        "item_id\tgenre\n" + "".join(f"{ids[i]}\tg{genre[i]}\n" for i in order))
    (root / "music.item").write_text(
        "item_id:token\ttitle:token_seq\tgenre:token_seq\n"
        + "".join(f"{ids[i]}\ttitle {i}\tg{genre[i]} extra\n" for i in range(N)))
    (root / "positional.txt").write_text("".join(f"g{g}\n" for g in genre))
    save_item_embeddings(root / "X.npz", ids, X, dtype=np.float32)
    return root


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "recbole_psrq.sid", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_end_to_end_npy_ids_labels(files):
    result = run_cli("--embeddings", files / "X.npy", "--ids", files / "ids.txt",
                     "--labels", files / "labels.tsv", "--quantizer", "psrq", "--levels", 3,
                     "--codebook-size", 8, "--seed", 0, "--knn-sample", 100,
                     "--report", files / "report.json", "--plot", files / "fig.png",
                     "--codes", files / "codes.npz", "--save-quantizer", files / "psrq.npz")
    assert result.returncode == 0, result.stderr
    report = json.loads((files / "report.json").read_text())
    for key in ("utilization", "perplexity", "nmi_labels", "nmi_level1"):
        assert len(report[key]) == 3, key
    for key in ("collision_rate", "recon_mse", "knn_recall@10", "fit_seconds"):
        assert isinstance(report[key], float), key
    assert report["labelled_items"] == N - 5
    assert report["config"]["quantizer"] == "psrq" and report["config"]["codebook_size"] == 8
    assert report["nmi_labels"][0] > 0.8  # 4 separated clusters: level 1 finds the genres
    # progress per level and the missing-label warning go to stderr; the table to stdout
    assert "psrq codebook 3/3" in result.stderr
    assert "5 of 300 items have no label" in result.stderr and "song295" in result.stderr
    assert "collision_rate" in result.stdout and "nmi_labels" in result.stdout
    assert (files / "fig.png").read_bytes()[:4] == b"\x89PNG"
    with np.load(files / "codes.npz") as saved:
        assert saved["item_id"][0] == "song0" and saved["sid"].shape == (N, 3)
    assert (files / "psrq.npz").is_file()


def test_report_values_on_a_hand_computed_example(tmp_path, capsys):
    # 1-D points 0, 1, 10, 11, k = 2, 2 levels, no normalisation (test_quantization's example): level 1
    # {t0, t1} {t2, t3}, level 2 {t0, t2} {t1, t3}, exact reconstruction. Labels by id, first line a real
    # item (no header), shuffled, t3 unlabelled: t0, t1 rock, t2 jazz.
    np.save(tmp_path / "X.npy", np.array([[0.0], [1.0], [10.0], [11.0]], dtype=np.float32))
    (tmp_path / "ids.txt").write_text("t0\nt1\nt2\nt3\n")
    (tmp_path / "labels.tsv").write_text("t2\tjazz\nt0\trock\nt1\trock\n")
    out = tmp_path / "report.json"
    assert main(["--embeddings", str(tmp_path / "X.npy"), "--ids", str(tmp_path / "ids.txt"),
                 "--labels", str(tmp_path / "labels.tsv"), "--quantizer", "rq_kmeans", "--levels", "2",
                 "--codebook-size", "2", "--option", "normalize=false", "--option", "nredo=10",
                 "--report", str(out)]) == 0
    report = json.loads(out.read_text())
    # labelled level-2 codes (A, B, A) vs labels (rock, rock, jazz): both have entropy
    # H = ln 3 - 2/3 ln 2, the joint has 3 equally likely pairs, MI = 2H - ln 3, NMI = MI / H
    h = math.log(3) - 2 / 3 * math.log(2)
    expected = {
        "n_items": 4, "n_levels": 2, "codebook_size": 2, "labelled_items": 3,
        "utilization": [1.0, 1.0], "perplexity": [2.0, 2.0],
        "unique_sids": 4, "collision_rate": 0.0, "max_items_per_sid": 1,
        "nmi_level1": [1.0, 0.0], "nmi_labels": [1.0, (2 * h - math.log(3)) / h],
        "purity_labels": [1.0, 2 / 3],
        "recon_mse_by_levels": [0.25, 0.0], "recon_mse": 0.0,
        "knn_recall@10": 1.0,  # k is capped at N - 1 = 3: every other item is a neighbour
    }
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, abs=1e-6), key
    assert 0 <= report["fit_seconds"] < 60
    assert report["config"]["dim"] == 1 and report["config"]["options"]["normalize"] is False
    assert report["warnings"] == [] and report["distinct_sid_share"] == 1.0
    table = capsys.readouterr().out
    assert "collision_rate: 0.0000" in table and "labelled_items: 3" in table
    assert "warning:" not in table


def test_warnings_are_printed_and_written(tmp_path, capsys):
    # the same 4 points with PSRQ (w = 1): level 2 splits by prefix, i.e. re-encodes level 1 (NMI 1),
    # and there are only 2 distinct SIDs for 4 items (share 0.5, below the threshold 0.6 set here)
    np.save(tmp_path / "X.npy", np.array([[0.0], [1.0], [10.0], [11.0]], dtype=np.float32))
    out = tmp_path / "report.json"
    assert main(["--embeddings", str(tmp_path / "X.npy"), "--quantizer", "psrq", "--levels", "2",
                 "--codebook-size", "2", "--option", "normalize=false", "--option", "nredo=10",
                 "--warn-distinct-share", "0.6", "--report", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["nmi_level1"] == [1.0, 1.0] and report["unique_sids"] == 2
    assert report["prefix_weights"] == [None, 1.0]
    assert report["warning_thresholds"] == {"nmi_level1": 0.9, "distinct_sid_share": 0.6}
    assert len(report["warnings"]) == 2
    assert report["warnings"][0].startswith("X.npy level 2: NMI with the level-1 codes is 1.000 > 0.9")
    assert report["warnings"][1].startswith("X.npy: only 2 distinct full SIDs for 4 items (share 0.500 < 0.6)")
    table = capsys.readouterr().out
    for warning in report["warnings"]:
        assert f"warning: {warning}" in table


def test_prefix_weight_auto_from_the_command_line(files):
    out = files / "auto_report.json"
    result = run_cli("--embeddings", files / "X.npz", "--quantizer", "psrq", "--levels", 3,
                     "--codebook-size", 8, "--knn-sample", 50, "--option", "prefix_weight=auto",
                     "--report", out)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["config"]["options"]["prefix_weight"] == "auto"
    weights = report["prefix_weights"]
    assert weights[0] is None and all(0 < w < 1 for w in weights[1:]) and weights[1] != weights[2]
    for level, weight in ((2, weights[1]), (3, weights[2])):
        assert f"psrq level {level}/3: prefix_weight auto = {weight:.4f}" in result.stderr
    assert "prefix_weights" in result.stdout


def test_bad_input_exits_2_with_message(files, tmp_path):
    X = np.load(files / "X.npy")
    X[[4, 9]] = np.nan
    np.save(tmp_path / "bad.npy", X)
    result = run_cli("--embeddings", tmp_path / "bad.npy", "--ids", files / "ids.txt",
                     "--codebook-size", 8)
    assert result.returncode == 2
    assert "2 embedding row(s) contain NaN or inf" in result.stderr
    assert "['song4', 'song9']" in result.stderr and "impute" in result.stderr
    assert "Traceback" not in result.stderr


def test_item_file_labels_and_npz_embeddings(files, capsys):
    out = files / "item_report.json"
    assert main(["--embeddings", str(files / "X.npz"), "--labels", str(files / "music.item"),
                 "--label-column", "genre", "--quantizer", "rq_kmeans", "--codebook-size", "8",
                 "--knn-sample", "50", "--report", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["labelled_items"] == N  # first token of the token_seq cell is the label
    assert report["nmi_labels"][0] > 0.8


def test_positional_labels_need_one_line_per_row(files, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["--embeddings", str(files / "X.npy"), "--labels", str(files / "positional.txt"),
                 "--quantizer", "vq", "--codebook-size", "8", "--knn-sample", "50",
                 "--report", str(out)]) == 0
    assert json.loads(out.read_text())["labelled_items"] == N
    (tmp_path / "short.txt").write_text("g0\ng1\n")
    assert main(["--embeddings", str(files / "X.npy"), "--labels", str(tmp_path / "short.txt"),
                 "--codebook-size", "8"]) == 2
    assert "one column and 2 lines, but there are 300 items" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--quantizer", "kmeans"], "Unknown quantizer 'kmeans'. Available quantizers: ['opq'"),
    (["--codebook-size", "1000"], "only N=300 items but codebook_size k=1000"),
    (["--option", "prefix_weigth=0.5"], "Unknown option(s) ['prefix_weigth']"),
    (["--option", "prefix_weight=automatic"],
     "prefix_weight must be a number >= 0 or 'auto' (per level, equal mean squared norms of the residual "
     "and prefix halves), got 'automatic'."),
])
def test_error_messages(files, capsys, extra, message):
    assert main(["--embeddings", str(files / "X.npy"), "--ids", str(files / "ids.txt"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_labels_by_id_need_embedding_ids(files, capsys):
    assert main(["--embeddings", str(files / "X.npy"), "--labels", str(files / "labels.tsv")]) == 2
    assert "the embeddings have no ids. Pass --ids" in capsys.readouterr().err


def test_ids_count_must_match_rows(files, tmp_path, capsys):
    (tmp_path / "ids.txt").write_text("a\nb\n")
    assert main(["--embeddings", str(files / "X.npy"), "--ids", str(tmp_path / "ids.txt")]) == 2
    assert "has 2 ids but" in capsys.readouterr().err
