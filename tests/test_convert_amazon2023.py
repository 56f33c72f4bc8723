"""Amazon Reviews 2023 converter on the hand-written fixture in tests/fixtures/raw/amazon2023/
(``Digital_Music.jsonl`` + ``meta_Digital_Music.jsonl.gz``)."""
import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recbole_psrq.convert import cli as convert_cli
from recbole_psrq.convert import amazon2023
from recbole_psrq.errors import ConfigError, DataFormatError

SRC = Path(__file__).resolve().parent / "fixtures" / "raw" / "amazon2023"
USER = "AGKHLEW2SOWHNMFQIJGBECAF7INQ"
NIGHT_FERRIES = "B00RMXJFL6"     # reviewed twice by USER (5 then 2 stars); description > 2,000 characters
NO_META = "B00WTRS158"           # reviewed, no meta line
GLASS_ORCHARD = "B00ZXSFKCH"
SUR = "B0081X8O9T"
NO_STORE = "B00AZYQDC0"          # meta store is null
AFTERHOURS = "B00FKNN1UO"        # USER's review of it appears twice (exact duplicate line)


def run(src, out, *extra):
    argv = ["amazon2023", "--src", str(src), "--out", str(out), "--no-progress", *extra]
    module, parser = convert_cli.build_parser("amazon2023")
    args = parser.parse_args(argv[1:])
    args.format, args.name = "amazon2023", Path(out).name
    return module.convert(args, "python -m recbole_psrq.convert " + " ".join(argv))


def read_inter(out):
    frame = pd.read_csv(Path(out) / f"{Path(out).name}.inter", sep="\t", dtype={"user_id:token": str,
                                                                                "item_id:token": str})
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def read_tsv(path):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)


def raw_reviews():
    with open(SRC / "Digital_Music.jsonl") as f:
        return pd.DataFrame([json.loads(line) for line in f if line.strip()])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("amazon") / "amazon-dm"
    return out, run(SRC, out)


def test_counts_one_row_per_review(converted):
    out, stats = converted
    raw = raw_reviews()
    assert stats["category"] == "Digital_Music"
    assert stats["raw_reviews"] == len(raw) == 65
    assert (stats["users"], stats["items"], stats["rows"]) == (9, 17, 65)
    assert stats["repeated_pair_rows"] == int(raw.duplicated(["user_id", "parent_asin"]).sum()) == 2
    assert stats["exact_duplicate_rows"] == 1
    inter = read_inter(out)
    assert len(inter) == 65 and inter["user_id"].nunique() == 9 and inter["item_id"].nunique() == 17
    assert sorted(zip(inter["user_id"], inter["item_id"], inter["rating"])) == sorted(
        zip(raw["user_id"], raw["parent_asin"], raw["rating"]))
    assert (inter["label"] == (inter["rating"] >= 4)).all()
    # review time: milliseconds floored to whole seconds (not rounded)
    assert sorted(zip(inter["user_id"], inter["item_id"], inter["timestamp"])) == sorted(
        zip(raw["user_id"], raw["parent_asin"], raw["timestamp"] // 1000))
    assert ((raw["timestamp"] % 1000) >= 500).any()
    assert stats["label_positive"] == int((raw["rating"] >= 4).sum()) == 40
    readme = (out / "README.md").read_text()
    assert "| raw reviews (non-blank lines of `Digital_Music.jsonl`) | 65 |" in readme
    assert "| reviews of a (user, item) pair reviewed before (kept) | 2 |" in readme


def test_rows_of_one_user_sorted_by_time_with_duplicates_kept(converted):
    inter = read_inter(converted[0])
    keys = list(zip(inter["user_id"], inter["timestamp"]))
    assert keys == sorted(keys)
    mine = inter[inter["user_id"] == USER]
    assert mine["item_id"].tolist() == [NIGHT_FERRIES, GLASS_ORCHARD, NO_META, "B00LBIIS4S", "B00DCGUBIW",
                                        NIGHT_FERRIES, AFTERHOURS, AFTERHOURS]
    assert mine["rating"].tolist() == [5, 3, 4, 1, 4, 2, 5, 5]
    assert mine["label"].tolist() == [1, 0, 1, 0, 1, 0, 1, 1]
    # milliseconds floored to seconds: 1588687728923 + 500 ms -> 1588687729
    assert mine["timestamp"].tolist() == [1588687729 + 3600 * k for k in range(7)] + [1588687729 + 3600 * 6]
    assert mine["verified_purchase"].tolist() == [1, 1, 1, 0, 1, 1, 1, 1]
    assert mine["helpful_vote"].tolist() == [0, 1, 0, 1, 0, 1, 0, 0]


def test_item_text_exact_and_truncation(converted):
    out, stats = converted
    text = read_tsv(out / "amazon-dm.item_text.tsv").set_index("item_id")
    assert list(text.columns) == ["text", "title", "store", "categories"]
    assert text.loc[GLASS_ORCHARD, "text"] == (
        "Glass Orchard. Store: Mira Solano. Features: Audio CD; Remastered. Description: The second record by "
        "Mira Solano. Recorded live to tape over two winter nights.")
    assert text.loc[SUR, "text"] == ("Sur. Store: Los Caminos. Categories: CDs & Vinyl > Indie & Alternative. "
                                     "Features: Audio CD; Remastered.")
    assert text.loc[SUR, "categories"] == "CDs & Vinyl > Indie & Alternative"
    assert text.loc[NO_STORE, "text"].startswith("Live at the Harbour. Description: The first record by various")
    long = text.loc[NIGHT_FERRIES, "text"]
    prefix = "Night Ferries. Store: The Velvet Harbour. Categories: CDs & Vinyl > Indie & Alternative. Description: "
    assert long.startswith(prefix)
    description = long[len(prefix):]
    assert 1950 <= len(description) <= 2000 and description.endswith("crossings.")  # cut at a word boundary
    assert stats["descriptions_truncated"] == 1
    assert NO_META not in text.index and len(text) == 16
    item = read_tsv(out / "amazon-dm.item").set_index("item_id:token")
    assert item.loc["B0001DCU14", "store:token"] == "big tom reyes"  # '"Big" Tom Reyes', quotes dropped
    assert item.loc[NO_STORE, "store:token"] == "" and item.loc[NO_META, "store:token"] == ""
    assert stats["items_without_meta"] == 1 and stats["items_without_text"] == 1


def test_item_text_function():
    text, cut = amazon2023.item_text("Album!", "", ["A", "B"], [], ["one two three four"], description_chars=9)
    assert (text, cut) == ("Album! Categories: A > B. Description: one two", True)
    assert amazon2023.item_text() == ("", False)
    assert amazon2023._strings(["x", None, ["  y\tz "], 3]) == ["x", "y z", "3"]


def test_yaml(converted):
    config = yaml.safe_load((converted[0] / "amazon-dm.yaml").read_text())
    assert config["dataset"] == "amazon-dm"
    assert config["load_col"] == {"inter": ["user_id", "item_id", "timestamp", "label"],
                                  "item": ["item_id", "store"]}
    assert config["sid_embedding_files"] == {}
    readme = (converted[0] / "README.md").read_text()
    for needle in ("Do not commit", "Hou", "rating >= 4 = 1", "floored", "cut to 2,000 characters",
                   "python -m recbole_psrq.convert amazon2023"):
        assert needle in readme, needle


def test_deterministic_and_gz_reviews(converted, tmp_path):
    out = tmp_path / "amazon-dm"
    run(SRC, out)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    run(SRC, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    src = tmp_path / "src"
    shutil.copytree(SRC, src)
    with gzip.open(src / "Digital_Music.jsonl.gz", "wb") as f:
        f.write((src / "Digital_Music.jsonl").read_bytes())
    (src / "Digital_Music.jsonl").unlink()
    # and the meta as plain JSON lines
    (src / "meta_Digital_Music.jsonl").write_bytes(gzip.decompress((src / "meta_Digital_Music.jsonl.gz").read_bytes()))
    (src / "meta_Digital_Music.jsonl.gz").unlink()
    stats = run(src, tmp_path / "gz" / "amazon-dm")
    assert stats["reviews_file"] == "Digital_Music.jsonl.gz"
    for fname in ("amazon-dm.inter", "amazon-dm.item", "amazon-dm.item_text.tsv"):
        assert (tmp_path / "gz" / "amazon-dm" / fname).read_bytes() == first[fname], fname


def test_category_detection(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(SRC, src)
    (src / "CDs_and_Vinyl.jsonl.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(ConfigError, match=r"several categories \(CDs_and_Vinyl, Digital_Music\).*--category"):
        run(src, tmp_path / "a" / "amazon")
    stats = run(src, tmp_path / "b" / "amazon", "--category", "Digital_Music")
    assert stats["rows"] == 65
    with pytest.raises(DataFormatError, match=r"Musical_Instruments.jsonl.*found in .*: CDs_and_Vinyl, Digital_Music"):
        run(src, tmp_path / "c" / "amazon", "--category", "Musical_Instruments")
    with pytest.raises(DataFormatError, match=r"meta_CDs_and_Vinyl.jsonl.*--no-meta"):
        run(src, tmp_path / "d" / "amazon", "--category", "CDs_and_Vinyl")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataFormatError, match=r"no <Category>.jsonl"):
        run(empty, tmp_path / "e" / "amazon")


def test_no_meta_option(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(SRC, src)
    (src / "meta_Digital_Music.jsonl.gz").unlink()
    with pytest.raises(DataFormatError, match=r"meta_Digital_Music.jsonl"):
        run(src, tmp_path / "amazon")
    stats = run(src, tmp_path / "amazon", "--no-meta")
    assert stats["items_without_text"] == stats["items"] == 17 and stats["rows"] == 65
    assert read_tsv(tmp_path / "amazon" / "amazon.item_text.tsv").empty
    assert "No meta file was read" in (tmp_path / "amazon" / "README.md").read_text()


def test_kcore_and_threshold(tmp_path):
    stats = run(SRC, tmp_path / "amazon", "--kcore", "4", "--rating-threshold", "5")
    inter = read_inter(tmp_path / "amazon")
    assert inter.groupby("user_id").size().min() >= 4 and inter.groupby("item_id").size().min() >= 4
    assert stats["rows_removed_by_kcore"] == 65 - len(inter) > 0
    assert (inter["label"] == (inter["rating"] == 5)).all()


def _edit_reviews(tmp_path, edit):
    src = tmp_path / "src"
    shutil.copytree(SRC, src)
    lines = (src / "Digital_Music.jsonl").read_text().splitlines(keepends=True)
    edit(lines)
    (src / "Digital_Music.jsonl").write_text("".join(lines))
    return src


def _set(lines, i, **fields):
    obj = json.loads(lines[i])
    obj.update(fields)
    for k, v in list(obj.items()):
        if v is KeyError:
            del obj[k]
    lines[i] = json.dumps(obj) + "\n"


@pytest.mark.parametrize("edit, needles", [
    (lambda lines: lines.__setitem__(6, lines[6][:40] + "\n"), ["Digital_Music.jsonl, line 7: not valid JSON"]),
    (lambda lines: _set(lines, 11, parent_asin=KeyError), ["Digital_Music.jsonl, line 12: 'parent_asin' is None"]),
    (lambda lines: _set(lines, 2, rating="five"),
     ["Digital_Music.jsonl, line 3: 'rating' is 'five', expected a number"]),
    (lambda lines: _set(lines, 4, timestamp="2020-05-05"),
     ["line 5: 'timestamp' is '2020-05-05', expected an integer"]),
    (lambda lines: lines.__setitem__(0, "[1, 2]\n"), ["line 1: expected a JSON object, found list"]),
])
def test_malformed_reviews_name_file_and_line(tmp_path, edit, needles):
    src = _edit_reviews(tmp_path, edit)
    with pytest.raises(DataFormatError) as e:
        run(src, tmp_path / "amazon")
    for needle in needles:
        assert needle in str(e.value), str(e.value)


def test_malformed_meta_names_file_and_line(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(SRC, src)
    lines = gzip.decompress((src / "meta_Digital_Music.jsonl.gz").read_bytes()).decode().splitlines(keepends=True)
    lines[3] = lines[3][:-10] + "\n"
    (src / "meta_Digital_Music.jsonl.gz").write_bytes(gzip.compress("".join(lines).encode()))
    with pytest.raises(DataFormatError, match=r"meta_Digital_Music.jsonl.gz, line 4: not valid JSON"):
        run(src, tmp_path / "amazon")


def test_cli(tmp_path, capsys):
    out = tmp_path / "amazon-dm"
    assert convert_cli.main(["amazon2023", "--src", str(SRC), "--out", str(out), "--no-progress"]) == 0
    assert f"{out}: 9 users, 17 items, 65 rows" in capsys.readouterr().out
    src = _edit_reviews(tmp_path, lambda lines: lines.__setitem__(9, "{broken\n"))
    assert convert_cli.main(["amazon2023", "--src", str(src), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "Digital_Music.jsonl, line 10: not valid JSON" in capsys.readouterr().err
