"""Every converter's fixture, converted with default options, trains DIN for one epoch through
``run_recbole_psrq.py`` using only the ``<name>.yaml`` the converter wrote."""
import json
import os
import re
from pathlib import Path

import pytest

import run_recbole_psrq
from recbole_psrq.convert import cli as convert
from tests.conftest import staged_raw_fixtures

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def raw_fixture(fmt, tmp_path):
    if fmt == "mpd":  # one slice in the real MPD format, big enough for an 80/10/10 split per playlist
        folder = tmp_path / "mpd_raw"
        folder.mkdir()
        playlists = [{"pid": pid, "name": f"list {pid}", "num_tracks": 10, "tracks": [
            {"pos": pos, "track_uri": f"spotify:track:t{(pid * 3 + pos * 7) % 40:02d}",
             "track_name": f"Song {(pid * 3 + pos * 7) % 40}", "artist_name": f"Artist {(pid + pos) % 6}"}
            for pos in range(10)]} for pid in range(12)]
        (folder / "mpd.slice.0-999.json").write_text(json.dumps({"info": {}, "playlists": playlists}))
        return folder, ["--no-encode-text"]
    return staged_raw_fixtures() / fmt, []


@pytest.mark.parametrize("fmt", sorted(convert.FORMATS))
def test_converted_fixture_trains_one_epoch(fmt, tmp_path, workdir, capsys):
    src, options = raw_fixture(fmt, tmp_path)
    if not src.is_dir():
        pytest.fail(f"no fixture for {fmt}: expected {src}")
    name = fmt.replace("-", "_") + "_fixture"
    out = tmp_path / "converted" / name
    assert convert.main([fmt, "--src", str(src), "--out", str(out), "--no-progress", *options]) == 0
    yaml_file = out / f"{name}.yaml"
    assert yaml_file.is_file()
    capsys.readouterr()

    code = run_recbole_psrq.main(["--model=DIN", f"--config_files={yaml_file}", "--epochs=1",
                                  "--train_batch_size=64", "--eval_batch_size=256"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    metrics = dict(re.findall(r"(\w+): ([0-9.]+)", printed.strip().splitlines()[-1]))
    assert {"auc", "logloss"} <= set(metrics), printed
    assert 0.0 <= float(metrics["auc"]) <= 1.0
    assert os.path.isfile(os.path.join(workdir, "saved", os.listdir(os.path.join(workdir, "saved"))[0]))


def test_a_dataset_too_small_to_validate_gets_a_clear_error(tmp_path, workdir, capsys):
    """Two playlists: the valid split has one label only, AUC is NaN, RecBole saves no checkpoint."""
    src = tmp_path / "raw"
    src.mkdir()
    for fixture in (FIXTURES / "mpd" / "with_pos").glob("fixture.*.json"):
        (src / fixture.name.replace("fixture.", "mpd.slice.", 1)).write_bytes(fixture.read_bytes())
    out = tmp_path / "converted" / "tiny"
    assert convert.main(["mpd", "--src", str(src), "--out", str(out), "--no-progress", "--no-encode-text"]) == 0
    capsys.readouterr()
    assert run_recbole_psrq.main(["--model=DIN", f"--config_files={out / 'tiny.yaml'}", "--epochs=1"]) == 2
    err = capsys.readouterr().err
    assert "No checkpoint was saved: the validation metric AUC was never a finite number" in err
    assert "'tiny'" in err
