"""Tracing a document's figures to results.csv (``python -m recbole_psrq.benchmark.trace``): what counts as
a figure, precision-aware matching, region markers and their errors, and the README's own regions."""
import os

import pytest

from recbole_psrq.benchmark.trace import TraceError, figures, main, untraced
from recbole_psrq.quick_start import PROJECT_ROOT

CSV = """table,name,overrides,statistic,seed,auc,coldauc_share,p_holm
T2,DIN,{},run,0,0.89904,0.67468,
T2,DIN,,mean,,0.8990449,,
T2,MCCA,,diff,,-0.00912,,7.26e-05
T2,MCCA,,p,,,,0.0215
T2,MCCA,"{""learning_rate"": 0.0046318, ""dropout_prob"": [0.2, 0.31], ""mlp"": ""[0.15, 64]""}",tuned,,0.8682,,
"""


def _doc(tmp_path, body, csv_text=CSV):
    (tmp_path / "results").mkdir(exist_ok=True)
    (tmp_path / "results" / "results.csv").write_text(csv_text)
    path = tmp_path / "doc.md"
    path.write_text(body)
    return str(path)


def test_figures_are_decimals_with_their_written_precision():
    found = list(figures("AUC 0.8990 ± 0.0041, Δ −0.009 [+0.013], -0.25, 7.3e-05, 1.1e−05, 67.5% of rows; "
                         "RecBole 1.2.1, Python 3.11.4, 58,693 rows, seed 3, commit c643cc9653, lr 1e-4"))
    assert [w for _, _, w in found] == ["0.8990", "0.0041", "−0.009", "+0.013", "-0.25", "7.3e-05", "1.1e−05",
                                        "67.5%"]
    value = {w: (v, h) for v, h, w in found}
    assert value["−0.009"] == pytest.approx((-0.009, 0.0005))
    assert value["-0.25"] == pytest.approx((-0.25, 0.005)) and value["+0.013"][0] > 0
    assert value["7.3e-05"] == pytest.approx((7.3e-05, 0.05e-05))
    assert value["1.1e−05"] == pytest.approx((1.1e-05, 0.05e-05))  # a Unicode minus in the exponent
    assert value["67.5%"] == pytest.approx((0.675, 0.0005))


def test_a_figure_is_traced_when_a_value_rounds_to_it_and_untraced_otherwise(tmp_path):
    body = ("intro 0.1234 is outside any region\n"
            "<!-- figures: results/results.csv -->\n"
            "| DIN | 0.8990 | 0.899 | 67.5% |\n"
            "MCCA − DIN = −0.009, p_Holm 7.3e-05 and 0.022\n"  # 0.022: 0.0215 rounds half up in decimal
            "DIN 0.8991, share 67.4%, p 7.2e-05, Δ +0.009\n"    # each off by one unit, or the wrong sign
            "<!-- end figures -->\n"
            "after 0.5555\n")
    missing, checked = untraced(_doc(tmp_path, body))
    assert checked == 10
    assert [(n, w) for n, w, _ in missing] == [(5, "0.8991"), (5, "67.4%"), (5, "7.2e-05"), (5, "+0.009")]


def test_ascii_minus_figures_above_every_value_and_nan_cells(tmp_path):
    csv_text = "name,auc,coldauc_unseen,p\n" + "".join(f"r{i},{0.5 + i / 100},nan,{'inf' if i % 3 else 0.2}\n"
                                                       for i in range(40)) + "d,-0.00912,nan,nan\n"
    missing, checked = untraced(_doc(tmp_path, "<!-- figures: results/results.csv -->\n"
                                               "-0.009, 0.57, 0.89, 0.2 and 0.9999 (above every value)\n"
                                               "<!-- end figures -->\n", csv_text))
    assert checked == 5 and [w for _, w, _ in missing] == ["0.9999"]

def test_chosen_values_in_a_json_cell_are_results_too(tmp_path):
    missing, checked = untraced(_doc(tmp_path, "<!-- figures: results/results.csv -->\n"
                                               "lr 0.00463, dropout [0.2, 0.31], best 0.8682; not 0.0047; "
                                               "0.15 from a string value\n<!-- end figures -->\n"))
    assert checked == 6 and [w for _, w, _ in missing] == ["0.0047"]


def test_several_results_files_and_several_regions(tmp_path):
    path = _doc(tmp_path, "<!-- figures: results/results.csv other.csv -->\n0.8990 and 0.4242\n"
                          "<!-- end figures -->\n<!-- figures: results/results.csv -->\n0.4242\n<!-- end figures -->\n")
    (tmp_path / "other.csv").write_text("name,auc\nX,0.42421\n")
    missing, checked = untraced(path)
    assert checked == 3 and [(n, w) for n, w, _ in missing] == [(5, "0.4242")]  # other.csv is not in region 2


@pytest.mark.parametrize("body, message", [
    ("<!-- figures: results/results.csv -->\n0.8990\n", "never closed"),
    ("<!-- figures: results/results.csv -->\n<!-- figures: results/results.csv -->\n<!-- end figures -->\n",
     "starts inside the one opened at line 1"),
    ("0.1\n<!-- end figures -->\n", "doc.md:2: <!-- end figures --> without a region"),
    ("<!-- figures: -->\n<!-- end figures -->\n",
     "names no results file; write <!-- figures: results/<name>/results.csv -->"),
    ("<!-- figures: results/missing.csv -->\n<!-- end figures -->\n",
     "cannot read .*missing.csv .*run the benchmark report that writes it, or fix the path in the region's marker"),
    ("a marker quoted in prose, `<!-- figures: results/results.csv -->`, opens nothing\n<!-- end figures -->\n",
     "without a region"),
])
def test_malformed_regions_are_errors_that_name_the_line(tmp_path, body, message):
    with pytest.raises(TraceError, match=message):
        untraced(_doc(tmp_path, body))


def test_the_command_lists_untraced_figures_and_exits_1(tmp_path, capsys):
    good = _doc(tmp_path, "<!-- figures: results/results.csv -->\n0.8990\n<!-- end figures -->\n")
    assert main([good]) == 0
    assert "1 of 1 figure(s) traced" in capsys.readouterr().out
    bad = tmp_path / "bad.md"
    long_line = "| DIN | 0.9990 |" + " x" * 200
    bad.write_text(f"<!-- figures: results/results.csv -->\n{long_line}\n<!-- end figures -->\n")
    assert main([str(bad), good]) == 1  # one untraced figure in any document fails the command
    out = capsys.readouterr().out
    assert f"{bad}:2: 0.9990 is in no results file of its region: {long_line[:160]}\n" in out
    assert f"{bad}: 0 of 1 figure(s) traced" in out and f"{good}: 1 of 1 figure(s) traced" in out
    bad.write_text("<!-- figures: nowhere.csv -->\n<!-- end figures -->\n")
    assert main([str(bad)]) == 2 and "cannot read" in capsys.readouterr().err


def test_the_command_explains_itself(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m recbole_psrq.benchmark.trace [-h] documents [documents ...]")
    assert "<!-- end figures -->" in out and "markdown files with traced regions (e.g. README.md)" in out


def test_every_traced_figure_of_the_readme_is_in_its_results():
    missing, _ = untraced(os.path.join(PROJECT_ROOT, "README.md"))
    assert missing == []


def test_the_papers_figures_are_the_specs_and_their_differences_are_exact():
    """results/paper/results.csv transcribes the paper's table (SPEC.md) so a README can trace the paper's
    numbers too: its differences must follow from its reported values, and those from the SPEC."""
    import csv
    import re

    with open(os.path.join(PROJECT_ROOT, "results", "paper", "results.csv")) as f:
        rows = list(csv.DictReader(f))
    metrics = ("auc", "coldauc", "logloss")
    reported = {(r["dataset"], r["name"]): [float(r[m]) for m in metrics] for r in rows if r["statistic"] == "reported"}
    assert len(reported) == 27
    diffs = [r for r in rows if r["statistic"] == "diff"]
    assert len(diffs) == 3 * 15 and {r["name"] for r in diffs} >= {"PSRQ+MCCA", "DIN+PSRQ"}
    for r in diffs:
        a, b = reported[(r["dataset"], r["name"])], reported[(r["dataset"], r["versus"])]
        assert [float(r[m]) for m in metrics] == pytest.approx([x - y for x, y in zip(a, b)], abs=1e-9), r
    spec = os.path.join(PROJECT_ROOT, "..", "shared", "SPEC.md")
    if not os.path.exists(spec):
        pytest.skip("../shared/SPEC.md is not here: the reported values were checked against it where it was")
    datasets, methods = ["Amazon Baby", "Industrial", "Music4all"], []
    for line in open(spec).read().splitlines():
        match = re.match(r"\| (DIN[^|]*|MCCA w/o M[SJ]C|PSRQ\+MCCA) \| (.*) \|$", line)
        if match:
            methods.append(match.group(1).strip())
            for dataset, cell in zip(datasets, match.group(2).split("|")):
                assert reported[(dataset, methods[-1])] == [float(x) for x in cell.split(" / ")]
    assert len(methods) == 9  # every row of the SPEC's table was compared
