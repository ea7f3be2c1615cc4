"""The training loop: exact resume after an interruption, outputs, and transformers.Trainer."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_gpt2

import tnpeft
from tnpeft.errors import ConfigError
from tnpeft.train.loop import LMData, TrainConfig, TrainingInterrupted, fit


def _data(n=40, length=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return LMData(torch.randint(0, 97, (n, length), generator=g))


def _model(adapter, **hp):
    return tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig(adapter, ["c_attn", "c_fc"], **hp))


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


CASES = [("lora", {"r": 4}), ("adalora", {"r": 6, "target_r": 3, "tinit": 2, "tfinal": 2}),
         ("quantum_peft", {"rank": 4}), ("qpa", {"r": 2, "chunk_size": 32, "qnn_layers": 2})]


@pytest.mark.parametrize("adapter,hp", CASES, ids=[c[0] for c in CASES])
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, adapter, hp):
    cfg = TrainConfig(task="causal_lm", epochs=2, batch_size=8, lr=5e-3, warmup_steps=2, checkpoint_every=3, seed=1)
    train, test = _data(), _data(8, seed=1)
    full = _model(adapter, **hp)
    m_full = fit(full, None, train, test, cfg, tmp_path / "full", progress=False)
    assert m_full["steps"] == 10 and len(m_full["eval_history"]) == 1

    part = _model(adapter, **hp)
    with pytest.raises(TrainingInterrupted) as e:
        fit(part, None, train, test, cfg, tmp_path / "part", progress=False, stop_after=7)
    assert e.value.step == 7
    resumed = _model(adapter, **hp)                       # a fresh process would rebuild the model
    m_res = fit(resumed, None, train, test, cfg, tmp_path / "part", progress=False)
    want, got = _weights(full), _weights(resumed)
    assert want.keys() == got.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=0, msg=k)
    assert m_res["final"]["loss"] == pytest.approx(m_full["final"]["loss"], abs=1e-6)
    assert len(json.loads((tmp_path / "part" / "metrics.json").read_text())["eval_history"]) == 1


def test_outputs_and_loss_falls(tmp_path):
    cfg = TrainConfig(task="causal_lm", epochs=6, batch_size=8, lr=1e-2, warmup_steps=2, eval_every=10)
    train = _data(16)
    m = _model("lora", r=4)
    metrics = fit(m, None, train, train, cfg, tmp_path, progress=False)
    ev = metrics["eval_history"]
    assert [e["step"] for e in ev] == [0, 10, 12] and ev[-1]["loss"] < ev[0]["loss"]
    assert metrics["last_loss_avg20"] < metrics["first_loss"]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fresh = tnpeft.load_adapter(tiny_gpt2(), tmp_path / "adapter")
    ids = train.blocks[:2]
    with torch.no_grad():
        m.eval()
        torch.testing.assert_close(fresh(ids).logits, m(ids).logits)
    # the finished run is idempotent: running again does no step and writes the same adapter
    again = fit(_model("lora", r=4), None, train, train, cfg, tmp_path, progress=False)
    assert again["final"] == metrics["final"]


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    cfg = TrainConfig(task="causal_lm", epochs=1, batch_size=8, checkpoint_every=2)
    with pytest.raises(TrainingInterrupted):
        fit(_model("lora", r=4), None, _data(), _data(8), cfg, tmp_path, progress=False, stop_after=2)
    other = TrainConfig(task="causal_lm", epochs=1, batch_size=8, checkpoint_every=2, lr=1e-4)
    with pytest.raises(ConfigError, match="different run") as e:
        fit(_model("lora", r=4), None, _data(), _data(8), other, tmp_path, progress=False)
    assert e.value.field == "out"
    fit(_model("lora", r=4), None, _data(), _data(8), other, tmp_path, progress=False, resume=False)


def test_bad_config_is_named():
    with pytest.raises(ConfigError) as e:
        TrainConfig(task="translation").check()
    assert e.value.field == "task"
    with pytest.raises(ConfigError) as e:
        TrainConfig(batch_size=0).check()
    assert e.value.field == "batch_size"


def test_adapted_model_trains_inside_transformers_trainer(tmp_path):
    from transformers import Trainer, TrainingArguments

    from tnpeft.train.callbacks import SaveAdapterCallback

    model = _model("lora", r=4)
    before = _weights(model)
    blocks = _data(32).blocks
    ds = [{"input_ids": b, "labels": b} for b in blocks]
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=6, per_device_train_batch_size=8,
                             learning_rate=1e-2, save_steps=3, save_strategy="steps", report_to=[],
                             logging_steps=1, use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[SaveAdapterCallback()])
    out = trainer.train()
    assert out.global_step == 6
    after = _weights(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)        # adapters moved
    base_w = dict(tiny_gpt2().named_parameters())
    for n, p in model.named_parameters():                                   # the base model did not
        if not p.requires_grad and "base_layer" not in n and n in base_w:
            assert torch.equal(p, base_w[n]), n
    saved = tmp_path / "hf" / "checkpoint-6" / "tnpeft_adapter"
    fresh = tnpeft.load_adapter(tiny_gpt2(), saved)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(fresh(blocks[:2]).logits, model(blocks[:2]).logits)


def _tiny_folder(path):
    """A tiny GPT-2 with MiniLM's tokenizer, saved as a local model folder (safetensors)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from tnpeft.train.offline_assets import minilm_path

    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=tok.vocab_size, n_positions=64,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_cli_train_interrupted_and_rerun_finishes_with_the_same_adapter(tmp_path):
    from safetensors.torch import load_file

    from tnpeft.cli import main
    from tnpeft.train.offline_assets import hamlet

    model = _tiny_folder(tmp_path / "model")
    text = tmp_path / "text.txt"
    text.write_text(hamlet()[:6000])
    common = ["train", "--model", str(model), "--data", str(text), "--adapter", "lora", "r=2", "--max-length", "32",
              "--batch-size", "4", "--max-steps", "8", "--checkpoint-every", "3", "--lr", "1e-2", "--json"]
    assert main(common + ["--out", str(tmp_path / "full")]) == 0
    assert main(common + ["--out", str(tmp_path / "cut"), "--stop-after", "5"]) == 130
    state = json.loads((tmp_path / "cut" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 5
    # a kill during the checkpoint swap leaves checkpoint.old (and maybe a partial checkpoint.tmp)
    (tmp_path / "cut" / "checkpoint").rename(tmp_path / "cut" / "checkpoint.old")
    (tmp_path / "cut" / "checkpoint.tmp").mkdir()
    assert main(common + ["--out", str(tmp_path / "cut")]) == 0
    a = load_file(str(tmp_path / "full" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    m = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert m["steps"] == 8 and m["task"] == "causal_lm" and "perplexity" in m["final"]
    assert (tmp_path / "cut" / "curves.png").exists() and (tmp_path / "cut" / "diagram.svg").exists()


def test_cli_train_errors_name_the_field(tmp_path, capsys):
    from tnpeft.cli import main

    bad = tmp_path / "d.csv"
    bad.write_text("sentence,y\nhello,1\nbye,0\n")
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "no text column 'text'" in capsys.readouterr().err
    assert main(["train", "--model", str(tmp_path / "nope"), "--data", "hamlet", "--out", str(tmp_path / "o")]) == 2
    assert "neither a built-in" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tnpeft.train.offline_assets import hamlet

    root = tmp_path_factory.mktemp("cli")
    model = _tiny_folder(root / "model")
    text = root / "text.txt"
    text.write_text(hamlet()[:3000])
    return root, model, text


def _bad_inputs(root, model, text):
    import os
    import shutil

    (root / "a_file").write_text("x")
    big = root / "big.csv"
    big.write_text("text,label\nok,0\n\"" + "a" * 140_000 + "\",1\nb,0\n")
    deep = root / "deep.jsonl"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    pickled = root / "pickled"
    pickled.mkdir(exist_ok=True)
    shutil.copy(model / "config.json", pickled / "config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    if not (root / "zero.txt").exists():
        os.symlink("/dev/zero", root / "zero.txt")
    if not (root / "fifo.txt").exists():
        os.mkfifo(root / "fifo.txt")
    base = ["train", "--model", str(model), "--data", str(text), "--max-length", "16", "--max-steps", "2", "--json"]
    yield base + ["--test-size", "nan"], "--test-size"
    yield base + ["--test-size", "-3"], "--test-size"
    yield base + ["--test-size", "2.5"], "--test-size"
    yield base + ["--train-size", "-2"], "--train-size"
    yield base + ["--train-size", "0"], "--train-size"
    yield base + ["--out", str(root / "a_file")], "a_file"
    yield base + ["--out", str(root / "a_file" / "sub")], "a_file"
    yield base + ["--lr", "nan"], "lr"
    yield base + ["--weight-decay", "-1"], "weight_decay"
    yield base + ["--batch-size", "0"], "batch_size"
    yield base + ["--epochs", "0"], "epochs"
    yield ["train", "--model", str(model), "--data", str(big)], "line 3"
    yield ["train", "--model", str(model), "--data", str(deep)], "deep.jsonl"
    yield ["train", "--model", str(pickled), "--data", str(text)], "pytorch_model.bin"
    yield ["train", "--model", str(root / "a_file"), "--data", str(text)], "a_file"
    yield ["train", "--model", str(model), "--data", str(root / "zero.txt")], "is a device"
    yield ["train", "--model", str(model), "--data", str(root / "fifo.txt")], "is a FIFO"
    yield ["train", "--model", str(model), "--data", str(root / "missing.csv")], "does not exist"
    yield ["train", "--model", str(model), "--data", str(root)], "expected a .csv"


def test_every_cli_train_error_is_one_line_naming_the_argument_or_file(tiny_run, capsys):
    from tnpeft.cli import main

    root, model, text = tiny_run
    cases = list(_bad_inputs(root, model, text))
    for args, needle in cases:
        if "--out" not in args:
            args = args + ["--out", str(root / "out")]
        rc = main(args)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc != 0, args
        assert len(err) == 1 and err[0].startswith("tnpeft: error: "), (args, err)
        assert needle in err[0], (needle, err[0])
        assert "Traceback" not in err[0]


def test_every_cli_demo_error_is_one_line_naming_the_argument(tmp_path, capsys):
    from tnpeft.cli import main

    (tmp_path / "a_file").write_text("x")
    for args, needle in ((["--adapters", "nope"], "--adapters"), (["--adapters", ","], "--adapters"),
                         (["--batch-size", "0"], "batch_size"), (["--epochs", "0"], "epochs"),
                         (["--train-size", "-2"], "--train-size"), (["--test-size", "0"], "--test-size"),
                         (["--out", str(tmp_path / "a_file")], "a_file")):
        rc = main(["demo", "--out", str(tmp_path / "out")] + args)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and needle in err[0], (args, err)


def test_evaluation_defaults_to_the_length_the_adapter_was_trained_with(tmp_path, monkeypatch):
    import tnpeft.train.evaluation as evaluation

    cfg = TrainConfig(task="causal_lm", max_steps=2, batch_size=8, max_length=12, warmup_steps=0)
    fit(_model("lora", r=2), None, _data(16), _data(8, seed=1), cfg, tmp_path, progress=False)
    fresh = tnpeft.load_adapter(tiny_gpt2(), tmp_path / "adapter")
    assert evaluation.training_length(fresh) == 12
    seen = []
    real = evaluation.make_batch
    monkeypatch.setattr(evaluation, "make_batch", lambda *a: seen.append(a[4]) or real(*a))
    evaluation.evaluate(fresh, None, _data(8, seed=1), "causal_lm", progress=False)
    evaluation.evaluate(fresh, None, _data(8, seed=1), "causal_lm", max_length=7, progress=False)
    assert seen == [12, 7]                               # the training length, unless told otherwise
    plain = _model("lora", r=2)                          # never trained: the documented default
    evaluation.evaluate(plain, None, _data(8, seed=1), "causal_lm", progress=False)
    assert seen[-1] == evaluation.DEFAULT_MAX_LENGTH
