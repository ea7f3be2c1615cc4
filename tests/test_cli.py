"""The ``tnpeft`` command."""

import json

from tnpeft.cli import main


def test_count_prints_table(capsys):
    assert main(["count", "lora", "--in-features", "768", "--out-features", "2304", "r=8"]) == 0
    out = capsys.readouterr().out
    assert "24,576" in out and "A" in out and "dense" in out


def test_count_json(capsys):
    assert main(["count", "lora", "r=4", "--in-features", "100", "--out-features", "50", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["parameters"] == 4 * 150
    assert [n["node"] for n in d["nodes"]] == ["A", "B"]
    assert d["dense_parameters"] == 5000


def test_count_errors_are_one_line(capsys):
    assert main(["count", "lora", "--in-features", "8", "--out-features", "8", "rank=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown hyper-parameter 'rank'" in err and "Traceback" not in err
    assert main(["count", "nope", "--in-features", "8", "--out-features", "8"]) == 2
    assert "unknown adapter 'nope'" in capsys.readouterr().err
    assert main(["count", "lora", "--in-features", "0", "--out-features", "8"]) == 2
