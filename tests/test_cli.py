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


def test_a_compare_spec_runs_through_every_verb(capsys, tmp_path):
    # `compare --adapters` writes NAME:key=value,...; the same text works where a verb takes an adapter
    def count(*argv):
        assert main(["count", *argv, "--in-features", "64", "--out-features", "32", "--json"]) == 0
        return json.loads(capsys.readouterr().out)["parameters"]

    assert count("lora:r=4,alpha=8") == count("lora", "r=4", "alpha=8") == 4 * (64 + 32)
    assert count("qpa:r=2,hidden=[8,8]") == count("qpa", "r=2", "hidden=[8,8]")   # a list keeps its comma
    assert count("lora:r=2", "alpha=4") == 2 * 96                                  # and mixes with words
    assert main(["draw", "quantum_peft:rank=2", "--in-features", "8", "--out-features", "8",
                 "-o", str(tmp_path / "d.svg")]) == 0
    assert (tmp_path / "d.svg").read_text().lstrip().startswith("<")


def test_count_errors_are_one_line(capsys):
    assert main(["count", "lora", "--in-features", "8", "--out-features", "8", "rank=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown hyper-parameter 'rank'" in err and "Traceback" not in err
    assert main(["count", "nope", "--in-features", "8", "--out-features", "8"]) == 2
    assert "unknown adapter 'nope'" in capsys.readouterr().err
    assert main(["count", "lora", "--in-features", "0", "--out-features", "8"]) == 2


# ---------------------------------------------------------------- a topology of one's own, end to end
import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import tiny_gpt2  # noqa: E402

import tnpeft  # noqa: E402

TT = ["mypkg.topos:ttlora", "--in-features", "768", "--out-features", "768", "bond=4"]
# 8·4 + 4·8·4 + 4·12·4 + 4·8·4 + 4·8·4 + 4·12: the six cores of 768 = 8·8·12 → 768 = 8·8·12
TT_COUNT = 32 + 128 + 192 + 128 + 128 + 48


def test_user_builder_through_count_draw_verify(tmp_path, capsys):
    assert main(["count", *TT, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["adapter"] == "mypkg.topos:ttlora" and d["parameters"] == TT_COUNT
    assert [n["node"] for n in d["nodes"]] == [f"G{t}" for t in range(1, 7)]
    assert main(["draw", *TT, "-o", str(tmp_path / "tt.svg")]) == 0
    svg = (tmp_path / "tt.svg").read_text()
    assert "G6" in svg and f"{TT_COUNT} trainable parameters" in svg
    assert main(["verify", *TT, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["ok"] is True


@pytest.fixture
def stored_param():
    """The ``stored`` parametrization of mypkg.frames, registered for one test only (it is not
    orthogonal by construction, so the random-graph strategies must not meet it)."""
    from mypkg.frames import STORED

    from tnpeft.params.unitary import UNITARY_PARAMS, register_unitary

    register_unitary(STORED)
    yield
    UNITARY_PARAMS.pop("stored", None)


def test_user_builder_through_export_circuits(tmp_path, capsys, stored_param):
    assert main(["export-circuits", "mypkg.topos:stored_svd", "--in-features", "16", "--out-features", "8",
                 "rank=2", "-o", str(tmp_path / "q"), "--json"]) == 0
    index = json.loads(capsys.readouterr().out)
    assert {e["name"] for e in index["circuits"]} == {"V", "U"}
    assert all((tmp_path / "q" / e["file"]).exists() for e in index["circuits"])


def test_user_builder_errors_are_one_line(capsys):
    for argv, want in (([*TT[:-1], "rank=3"], "unknown hyper-parameter 'rank'"),
                       (["mypkg.topos:nope", "--in-features", "8", "--out-features", "8"],
                        "has no function 'nope'; its functions: ['kron', 'stored_svd', 'ttlora']"),
                       (["nosuchpkg.topos:ttlora", "--in-features", "8", "--out-features", "8"],
                        "no module named 'nosuchpkg'"),
                       (["mypkg.topos:ttlora"], "needs positive --in-features and --out-features"),
                       (["mypkg.topos:kron", "--in-features", "7", "--out-features", "8"],
                        "built a 4 → 8 graph for a 7 → 8 layer"),
                       (["tt_lora_of_mine", "--in-features", "8", "--out-features", "8"], "module.path:function")):
        assert main(["count", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert want in err and "Traceback" not in err and err.count("\n") == 1, err


def test_graph_json_file_through_every_verb(tmp_path, capsys):
    g = tnpeft.adapters.quantum_peft(16, 16, rank=2)
    f = tmp_path / "qp.json"
    f.write_text(g.to_json())
    assert main(["count", str(f), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] == g.num_parameters()
    assert main(["draw", str(f), "-o", str(tmp_path / "g.png")]) == 0
    assert main(["verify", str(f)]) == 0
    assert main(["export-circuits", str(f), "-o", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "index.json").exists()
    capsys.readouterr()
    assert main(["count", str(f), "--in-features", "16"]) == 2
    assert "holds the sizes and hyper-parameters itself" in capsys.readouterr().err


@pytest.fixture
def saved_kron(tmp_path):
    from mypkg.topos import kron

    m = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig(kron, ["c_attn"]))
    with torch.no_grad():
        for _, layer in tnpeft.nn.tn_layers(m):
            layer.tn_adapters["default"].B.weight.normal_()
    tnpeft.save_adapter(m, tmp_path / "kron")
    return tmp_path / "kron", m


def test_adapter_dir_through_every_verb(saved_kron, tmp_path, capsys):
    d, model = saved_kron
    assert main(["count", "--adapter-dir", str(d), "--json"]) == 0
    c = json.loads(capsys.readouterr().out)
    assert [x["module"] for x in c["modules"]] == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    assert c["parameters"] == tnpeft.trainable_parameters(model).trainable == 2 * (4 * 2 + 8 * 48)
    assert main(["draw", "--adapter-dir", str(d), "--module", "transformer.h.1.attn.c_attn",
                 "-o", str(tmp_path / "k.svg")]) == 0
    assert "module transformer.h.1.attn.c_attn" in capsys.readouterr().out
    assert "kron on transformer.h.1.attn.c_attn" in (tmp_path / "k.svg").read_text()
    assert main(["verify", "--adapter-dir", str(d)]) == 0
    out = capsys.readouterr().out
    assert "2 adapted modules" not in out and "OK" in out.splitlines()[0]
    assert main(["draw", "--adapter-dir", str(d), "--module", "nope", "-o", str(tmp_path / "x.svg")]) == 2
    assert "has no module of that path" in capsys.readouterr().err


def test_adapter_dir_export_circuits(tmp_path, capsys):
    m = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig("quantum_peft", ["c_attn"], rank=2))
    tnpeft.save_adapter(m, tmp_path / "qp")
    assert main(["export-circuits", "--adapter-dir", str(tmp_path / "qp"), "-o", str(tmp_path / "c"), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["circuits"]) == 4


def test_adapter_and_adapter_dir_exclude_each_other(saved_kron, capsys):
    d, _ = saved_kron
    for argv in (["count"], ["count", "lora", "--adapter-dir", str(d)],
                 ["count", "--adapter-dir", str(d), "--in-features", "8"], ["count", "--adapter-dir", "/nonexistent"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("tnpeft: error:") and "Traceback" not in err


def _tiny_model_folder(path):
    """A tiny GPT-2 (n_embd 16) with MiniLM's tokenizer, saved as a local model folder."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from tnpeft.train.offline_assets import minilm_path

    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=tok.vocab_size, n_positions=64,
                               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_train_takes_a_user_topology_a_graph_file_and_a_saved_adapter(tmp_path, capsys):
    from safetensors.torch import load_file

    from tnpeft.train.offline_assets import hamlet

    model = _tiny_model_folder(tmp_path / "model")
    text = tmp_path / "text.txt"
    text.write_text(hamlet()[:4000])
    common = ["train", "--model", str(model), "--data", str(text), "--max-length", "32", "--batch-size", "4",
              "--max-steps", "4", "--lr", "1e-2", "--target-modules", "c_attn,", "--json"]
    # c_attn is 16 → 48: kron's A is 4×2, B 4×24
    assert main(common + ["--adapter", "mypkg.topos:kron", "--out", str(tmp_path / "k")]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["method"] == "custom:kron" and first["steps"] == 4
    saved = load_file(str(tmp_path / "k" / "adapter" / "adapter_model.safetensors"))
    assert {k.rsplit(".", 2)[-2] for k in saved} == {"A", "B"}
    # a graph .json file fits layers of its sizes
    g = tmp_path / "kron.json"
    from mypkg.topos import kron

    g.write_text(kron(16, 48).to_json())
    assert main(common + ["--adapter", str(g), "--out", str(tmp_path / "j")]) == 0
    capsys.readouterr()
    assert main(common[:-3] + ["--target-modules", "c_fc,", "--adapter", str(g), "--out", str(tmp_path / "x")]) == 2
    assert "is a 16 → 48 adapter" in capsys.readouterr().err
    # train on from the saved adapter: same graphs, values moving on from the saved ones
    assert main(common + ["--adapter-dir", str(tmp_path / "k" / "adapter"), "--out", str(tmp_path / "k2")]) == 0
    on = load_file(str(tmp_path / "k2" / "adapter" / "adapter_model.safetensors"))
    assert on.keys() == saved.keys() and any(not torch.equal(on[k], saved[k]) for k in on)
    assert main(common + ["--adapter-dir", str(tmp_path / "k" / "adapter"), "r=2", "--out", str(tmp_path / "y")]) == 2
