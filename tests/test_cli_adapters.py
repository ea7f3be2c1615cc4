"""The command line's adapter listing, version, count lines and peft conversion; the `r` alias;
the training defaults (held-out fraction, warmup clipped to the run)."""

import copy
import json

import pytest
import torch
from peft import PeftModel

import tnpeft
from tnpeft import AdapterConfig, Dense, Graph
from tnpeft.adapters import METHODS, register
from tnpeft.cli import main
from tnpeft.cli.tables import percent
from tnpeft.errors import ConfigError

SIZES = {"oft": (64, 64), "qwthn": (64, 64)}


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"tnpeft {tnpeft.__version__}"


def test_adapters_lists_every_method_with_defaults_including_a_users(capsys):
    @register("mine_chain")
    def mine_chain(in_features, out_features, r: int = 3, width: int = 5):
        return Graph([Dense("A", ("r", "in"), (r, in_features)), Dense("B", ("out", "r"), (out_features, r))])

    try:
        code, out, _ = run(capsys, "adapters", "--json")
        rows = {r["name"]: r for r in json.loads(out)}
        assert code == 0 and set(rows) == set(METHODS)
        assert rows["mine_chain"]["hparams"] == {"r": 3, "width": 5}
        assert rows["lora"]["hparams"]["r"] == 8 and rows["quantum_peft"]["aliases"] == {"r": "rank"}
        assert rows["adalora"]["training_hook"]
        code, out, _ = run(capsys, "adapters")
        assert "mine_chain" in out and "r=3, width=5" in out and "aliases: r = rank" in out
    finally:
        METHODS.pop("mine_chain")


def test_advice_is_listed_and_checked(capsys):
    @register("mine_advised", advice="Keep   it\n short.", learning_rate=1e-2)
    def mine_advised(in_features, out_features, r: int = 2):
        return Graph([Dense("A", ("r", "in"), (r, in_features)), Dense("B", ("out", "r"), (out_features, r))])

    try:
        code, out, _ = run(capsys, "adapters", "--json")
        rows = {r["name"]: r for r in json.loads(out)}
        assert rows["mine_advised"]["advice"] == "Keep it short." and rows["mine_advised"]["learning_rate"] == 1e-2
        # every method of the tweet study carries a line drawn from it
        assert all(rows[m]["advice"] for m in ("lora", "quantum_peft", "qpa", "qwthn", "mpo", "adalora", "oft"))
        code, out, _ = run(capsys, "adapters")
        assert "advice: Keep it short." in out and "advice: Raise the rank before the layers" in out
    finally:
        METHODS.pop("mine_advised")
    for bad in ("", "   ", 3):
        with pytest.raises(tnpeft.errors.ConfigError) as e:
            register("bad_advice", advice=bad)
        assert e.value.field == "advice"
    assert "bad_advice" not in METHODS


# adapters without a rank: a diagonal scale (IA³), block rotations (BOFT), a sparse spectrum (FourierFT),
# a full-rank circuit of local gates (QuanTA)
RANKLESS = {"ia3", "boft", "fourierft", "quanta"}


def test_r_means_the_rank_for_every_builtin():
    for name, m in METHODS.items():
        if name in RANKLESS:
            assert "r" not in m.hparams and "r" not in m.aliases
            continue
        n_in, n_out = SIZES.get(name, (64, 48))
        g = m.builder(n_in, n_out, r=4, **({"target_r": 2} if name == "adalora" else {}))
        assert "r" in m.hparams or "r" in m.aliases
        if name == "quantum_peft":
            assert g.nodes["L"].sizes == (4,) and g == m.builder(n_in, n_out, rank=4)
        if name == "oft":
            assert g.nodes["R1"].sizes == (4, 16, 16)        # peft's OFT r: the number of blocks
    with pytest.raises(ConfigError, match="another name for 'rank'"):
        METHODS["quantum_peft"].builder(16, 16, r=4, rank=2)
    with pytest.raises(ConfigError, match="unknown hyper-parameter"):
        AdapterConfig("quantum_peft", ["q"], rnk=4)
    AdapterConfig("quantum_peft", ["q"], r=4)


def test_percent_keeps_its_digits():
    assert percent(760, 4096 * 4096) == "45.3 ppm"
    assert percent(1, 8) == "12.50 %" and percent(4, 1000) == "0.400 %" and percent(0, 5) == "0 %"


@pytest.mark.parametrize("method", sorted(METHODS))
def test_count_prints_the_lora_line_for_every_adapter(method, capsys):
    n_in, n_out = SIZES.get(method, (4096, 4096))
    code, out, _ = run(capsys, "count", method, "--in-features", str(n_in), "--out-features", str(n_out))
    assert code == 0
    assert "LoRA of the same rank (r=" in out
    assert " 0.000 %" not in out


def test_quantum_peft_count_on_a_large_layer(capsys):
    _, out, _ = run(capsys, "count", "quantum_peft", "--in-features", "4096", "--out-features", "4096")
    assert "ppm of it" in out and "LoRA of the same rank (r=8) has 65,536 parameters" in out


def test_convert_a_saved_quantum_peft_adapter_loads_in_peft(capsys, tmp_path, minilm_dir):
    from transformers import AutoTokenizer

    from tnpeft.train.datasets import load_model

    loaded = load_model("minilm", "classification")
    m = tnpeft.inject(loaded.model, AdapterConfig("quantum_peft", ["query", "value"], r=4, modules_to_save=["head"]))
    with torch.no_grad():
        for n, p in m.named_parameters():
            if ".tnpeft_adapters." in n:
                p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(n))))
    tnpeft.save_adapter(m, tmp_path / "saved")
    code, out, err = run(capsys, "convert", "--adapter-dir", str(tmp_path / "saved"), "--model", "minilm",
                         "--to", "peft-lora", "-o", str(tmp_path / "peft"))
    assert code == 0, err
    assert "peft LoRA checkpoint of 12 modules (rank 4; factors); exact" in out and "note: modules trained" in out
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    enc = tok(["the flight was late again", "what a lovely day"], padding=True, return_tensors="pt")
    fresh = load_model("minilm", "classification").model
    pm = PeftModel.from_pretrained(copy.deepcopy(fresh), tmp_path / "peft").eval()
    m.eval()
    with torch.no_grad():
        want = m.encoder(**enc).last_hidden_state
        got = pm.base_model.model.encoder(**enc).last_hidden_state
        assert float((want - fresh.encoder(**enc).last_hidden_state).abs().max()) > 1e-3
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    code, out, _ = run(capsys, "convert", "--adapter-dir", str(tmp_path / "saved"), "--model", "minilm",
                       "-o", str(tmp_path / "peft1"), "--max-rank", "1", "--json")
    rep = json.loads(out)
    assert code == 0 and 0 < rep["max_error"] < 1 and {v["rank"] for v in rep["modules"].values()} == {1}


def test_small_csv_holds_out_a_fraction_and_warmup_is_clipped(tmp_path, capsys):
    from tnpeft.train.datasets import load_classification

    csv = tmp_path / "small.csv"
    csv.write_text("text,label\n" + "".join(f"row {i} text,{i % 2}\n" for i in range(30)))
    tr, te = load_classification(str(csv))
    assert (len(tr), len(te)) == (24, 6)
    code, out, err = run(capsys, "train", "--data", str(csv), "--model", "minilm", "--max-steps", "2",
                       "--batch-size", "4", "--out", str(tmp_path / "run"), "r=2", "--checkpoint-every", "100")
    assert code == 0
    assert "a warm-up of 20 steps is more than 0.1 of the run (2 steps); warming up over 1 step(s)" in out
    assert "loss (mean of last 20)" in err


def test_the_docs_advice_table_is_the_registered_advice():
    """docs/compare.md's advice table quotes every built-in method's advice as registered."""
    import re
    from pathlib import Path

    from tnpeft.adapters.methods import METHODS

    text = (Path(__file__).resolve().parents[1] / "docs" / "compare.md").read_text(encoding="utf-8")
    section = text.split("## Practical advice per method", 1)[1].split("\n## ", 1)[0]
    table = dict(re.findall(r"^\| (\w+) \| (.+) \|$", section, re.M))
    advised = {name: m.advice for name, m in METHODS.items()
               if m.advice and m.builder.__module__.startswith("tnpeft.")}     # the built-in methods
    assert len(advised) >= 10 and set(advised) <= set(table)
    for name, advice in advised.items():
        assert table[name] == advice, name
