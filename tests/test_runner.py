import json
import os
import sys

import pytest

import run_recbole_psrq
from recbole_psrq import quick_start
from recbole_psrq.errors import ConfigError, DataFormatError
from tests.conftest import one_epoch, same_metrics


def _cli(argv, capsys):
    code = run_recbole_psrq.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_unknown_model_lists_the_available_ones(capsys):
    code, _, err = _cli(["--model=NoSuchNet"], capsys)
    assert code == 2
    assert "Unknown model 'NoSuchNet'" in err
    for name in ("DIN", "SASRec", "DeepFM", "BPR"):
        assert name in err
    assert "Traceback" not in err


def test_wrong_case_model_name_gets_a_suggestion():
    with pytest.raises(ConfigError, match="Did you mean DIN"):
        quick_start.resolve_model("din")


def test_missing_dataset_names_the_path_and_how_to_create_it(tmp_path, capsys):
    code, _, err = _cli(["--model=DIN", "--dataset=nope", f"--data_path={tmp_path}"], capsys)
    assert code == 2
    assert os.path.join(str(tmp_path), "nope", "nope.inter") in err
    assert "python -m recbole_psrq.convert synthetic" in err
    assert "python -m recbole_psrq.convert <format>" in err


def _corrupt(data_path, line_no, new_line):
    path = os.path.join(data_path, "synthetic_music", "synthetic_music.inter")
    with open(path) as f:
        lines = f.readlines()
    lines[line_no - 1] = new_line + "\n"
    with open(path, "w") as f:
        f.writelines(lines)
    return path


def test_inter_row_with_wrong_column_count(tiny_data_path, workdir, capsys):
    path = _corrupt(tiny_data_path, 5, "u0001\tt0002\t1577836900\t1\textra")
    code, _, err = _cli(["--model=DIN", f"--data_path={tiny_data_path}"], capsys)
    assert code == 2
    assert f"{path}, line 5: expected 4 tab-separated columns" in err
    assert "found 5" in err and "Traceback" not in err


def test_inter_row_with_non_numeric_label(tiny_data_path, workdir, capsys):
    path = _corrupt(tiny_data_path, 7, "u0001\tt0002\t1577836900\tyes")
    code, _, err = _cli(["--model=DeepFM", f"--data_path={tiny_data_path}"], capsys)
    assert code == 2
    assert f"{path}, line 7: column 'label' is declared numeric (float) but holds 'yes'" in err


def test_label_outside_0_1_is_rejected_under_the_ctr_protocol(tiny_data_path, workdir):
    _corrupt(tiny_data_path, 3, "u0001\tt0002\t1577836900\t4")
    with pytest.raises(DataFormatError, match="line 3: label column 'label' holds '4'"):
        quick_start.run("DIN", overrides=one_epoch(tiny_data_path))


def test_protocol_follows_the_model_type():
    assert quick_start.default_protocol(quick_start.resolve_model("DIN")) == "ctr"
    assert quick_start.default_protocol(quick_start.resolve_model("DeepFM")) == "ctr"
    assert quick_start.default_protocol(quick_start.resolve_model("SASRec")) == "topk"


@pytest.mark.slow
@pytest.mark.parametrize("model, metric", [("DIN", "auc"), ("DeepFM", "auc"), ("SASRec", "ndcg@10")])
def test_run_trains_evaluates_and_writes_json(model, metric, tiny_data_path, workdir):
    result = quick_start.run(model, overrides=one_epoch(tiny_data_path))
    assert 0.0 <= result["test_result"][metric] <= 1.0
    with open(result["result_file"]) as f:
        written = json.load(f)
    assert same_metrics(written["test_result"], result["test_result"])
    assert os.path.dirname(result["result_file"]) == os.path.dirname(result["log_file"])
    assert os.path.isfile(result["checkpoint"])


@pytest.mark.slow
def test_checkpoint_reloads_in_a_fresh_process_with_same_metrics(tiny_data_path, workdir):
    import subprocess

    result = quick_start.run("DIN", overrides=one_epoch(tiny_data_path))
    root = quick_start.PROJECT_ROOT
    proc = subprocess.run(
        [sys.executable, os.path.join(root, "run_recbole_psrq.py"), f"--checkpoint={result['checkpoint']}"],
        capture_output=True, text=True, cwd=str(workdir), timeout=300,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    expected = "test result: " + quick_start.format_metrics(result["test_result"])
    assert last == expected
    # command-line overrides are read as values, like RecBole's --key=value (a batch size is a number)
    again = quick_start.evaluate_checkpoint(result["checkpoint"], {"eval_batch_size": "97"})
    assert same_metrics(again, result["test_result"])


@pytest.mark.slow
def test_result_json_records_the_seeds_and_the_protocol_checks(tiny_data_path, workdir):
    result = quick_start.run("DeepFM", overrides=one_epoch(tiny_data_path, seed=3))
    with open(result["result_file"]) as f:
        written = json.load(f)
    assert written["seeds"] == {"seed": 3, "sid_seed": None}
    report = written["protocol_checks"]
    assert report["checks"] == {"every_row_a_candidate": "passed"}
    assert report["test_rows"] == 262 and len(report["test_digest"]) == 64
    assert written["run_id"] in os.path.basename(written["checkpoint"])
    assert written["run_id"] in os.path.basename(written["log_file"])
