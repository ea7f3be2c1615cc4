"""Output folders: a save or export never writes into a folder that holds another kind of
checkpoint (a tnpeft adapter, a peft LoRA checkpoint, a model, a graph) unless told to overwrite,
and then no file of the earlier kind survives; an output is never written into its own input; a
killed save's temporary files go with the next save; saves to one folder wait for each other."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_gpt2
from peft import PeftModel
from safetensors.torch import save_file

import tnpeft
from tnpeft import AdapterConfig, export_peft, inject, load_adapter, save_adapter
from tnpeft.cli import main
from tnpeft.errors import WriteError
from tnpeft.fileio import LOCK_NAME, MODEL, PEFT_ADAPTER, TNPEFT_ADAPTER, checkpoint_folder, checkpoint_kinds
from tnpeft.nn import tn_layers
from tnpeft.storage.adapter_folder import FORMAT

IDS = torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(1))
ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors"}
MODEL_FILES = {"config.json", "model.safetensors"}


def lora_model(seed: int = 0, r: int = 2):
    return inject(tiny_gpt2(), AdapterConfig("lora", ["c_attn"], r=r, init_b="normal"),
                  rng=torch.Generator().manual_seed(seed))


def oft_model():
    m = inject(tiny_gpt2(), AdapterConfig("oft", ["c_attn"], block_size=8))
    with torch.no_grad():
        for n, p in m.named_parameters():
            if ".tn_adapters." in n:
                p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(n))))
    return m


def files(d: Path) -> set[str]:
    return {p.name for p in Path(d).iterdir()}


def logits(m) -> torch.Tensor:
    with torch.no_grad():
        return m(IDS).logits


def adapter_values(m, name: str = "default") -> dict[str, torch.Tensor]:
    return {f"{p}.{k}": v.detach().clone() for p, lay in tn_layers(m) if name in lay.tn_adapters
            for k, v in lay.tn_adapters[name].state_dict().items()}


def assert_loads_as(d: Path, m) -> None:
    fresh = load_adapter(tiny_gpt2(), d)
    want, got = adapter_values(m), adapter_values(fresh)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def model_folder(tmp_path: Path, minilm_dir: str):
    """The tiny GPT-2 saved as a model folder (with a tokenizer, as ``tnpeft convert --model`` needs one)."""
    from transformers import AutoTokenizer

    base = tiny_gpt2()
    base.save_pretrained(tmp_path / "model")
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(tmp_path / "model")
    return base


def test_the_kind_tag_is_the_adapter_format():
    assert FORMAT == tnpeft.fileio.TNPEFT_ADAPTER_FORMAT


# ------------------------------------------------------------------ never write an output into its input
def test_exporting_into_a_saved_adapter_folder_is_refused_and_the_adapter_survives(tmp_path):
    m = lora_model()
    save_adapter(m, tmp_path / "a")
    with pytest.raises(WriteError, match="holds a tnpeft adapter") as e:
        export_peft(m, tmp_path / "a")
    assert str(tmp_path / "a") in str(e.value) and e.value.path == str(tmp_path / "a")
    assert files(tmp_path / "a") == ADAPTER_FILES
    assert_loads_as(tmp_path / "a", m)


def test_convert_into_its_own_adapter_folder_is_refused_even_with_overwrite(tmp_path, capsys, minilm_dir):
    base = model_folder(tmp_path, minilm_dir)
    m = inject(base, AdapterConfig("lora", ["c_attn"], r=2, init_b="normal"))
    save_adapter(m, tmp_path / "a")
    before = {n: (tmp_path / "a" / n).read_bytes() for n in files(tmp_path / "a")}
    capsys.readouterr()
    for extra in ([], ["--overwrite"]):
        code = main(["convert", "--adapter-dir", str(tmp_path / "a"), "--model", str(tmp_path / "model"),
                     "-o", str(tmp_path / "a"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "is the adapter folder being converted" in err
        assert str(tmp_path / "a") in err
    assert {n: (tmp_path / "a" / n).read_bytes() for n in files(tmp_path / "a")} == before


def test_convert_into_a_folder_of_another_kind_needs_overwrite(tmp_path, capsys, minilm_dir):
    base = model_folder(tmp_path, minilm_dir)
    m = inject(base, AdapterConfig("lora", ["c_attn"], r=2, init_b="normal"))
    save_adapter(m, tmp_path / "a")
    save_adapter(m, tmp_path / "out")                     # another tnpeft adapter where the peft export goes
    argv = ["convert", "--adapter-dir", str(tmp_path / "a"), "--model", str(tmp_path / "model"),
            "--task", "causal_lm", "-o", str(tmp_path / "out")]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds a tnpeft adapter" in err and "--overwrite" in err and err.count("\n") == 1
    assert main(argv + ["--overwrite"]) == 0
    assert checkpoint_kinds(tmp_path / "out") == {PEFT_ADAPTER: sorted(ADAPTER_FILES)}
    pm = PeftModel.from_pretrained(tiny_gpt2(), tmp_path / "out")
    torch.testing.assert_close(logits(pm), logits(m), atol=1e-5, rtol=0)


# ------------------------------------------------------------------ no stale file serves the wrong model
def test_a_merged_export_over_a_lora_export_leaves_no_lora_file(tmp_path):
    from transformers import GPT2LMHeadModel

    lo, of = lora_model(), oft_model()
    export_peft(lo, tmp_path / "srv")
    with pytest.raises(WriteError, match="holds a peft adapter checkpoint"):
        export_peft(of, tmp_path / "srv")
    assert files(tmp_path / "srv") == ADAPTER_FILES          # the refused export changed nothing
    ex = export_peft(of, tmp_path / "srv", overwrite=True)
    assert ex.merged and files(tmp_path / "srv") == MODEL_FILES
    served = GPT2LMHeadModel.from_pretrained(tmp_path / "srv").eval()
    torch.testing.assert_close(logits(served), logits(of), atol=1e-5, rtol=0)


def test_a_lora_export_over_a_merged_export_leaves_no_model_file(tmp_path):
    lo, of = lora_model(), oft_model()
    export_peft(of, tmp_path / "srv")
    (tmp_path / "srv" / "tokenizer.json").write_text("{}")  # not a checkpoint file: kept
    with pytest.raises(WriteError, match="holds a model"):
        export_peft(lo, tmp_path / "srv")
    export_peft(lo, tmp_path / "srv", overwrite=True)
    assert files(tmp_path / "srv") == ADAPTER_FILES | {"tokenizer.json"}
    pm = PeftModel.from_pretrained(tiny_gpt2(), tmp_path / "srv")
    torch.testing.assert_close(logits(pm), logits(lo), atol=1e-5, rtol=0)


def test_overwrite_removes_a_sharded_model_too(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        save_file({"x": torch.zeros(1)}, d / name)
    (d / "model.safetensors.index.json").write_text("{}")
    (d / "config.json").write_text("{}")
    with pytest.raises(WriteError, match="holds a model"):
        save_adapter(lora_model(), d)
    save_adapter(lora_model(), d, overwrite=True)
    assert files(d) == ADAPTER_FILES


def test_saves_of_one_kind_replace_each_other_without_overwrite(tmp_path):
    a, b = lora_model(0, r=2), lora_model(1, r=3)
    save_adapter(a, tmp_path / "t")
    save_adapter(b, tmp_path / "t")
    assert_loads_as(tmp_path / "t", b)
    export_peft(a, tmp_path / "p")
    export_peft(b, tmp_path / "p")
    pm = PeftModel.from_pretrained(tiny_gpt2(), tmp_path / "p")
    torch.testing.assert_close(logits(pm), logits(b), atol=1e-5, rtol=0)
    assert files(tmp_path / "t") == files(tmp_path / "p") == ADAPTER_FILES   # no lock or temporary file left


def test_graph_and_adapter_folders_are_kinds_too(tmp_path):
    g = tnpeft.GraphModule(tnpeft.adapters.lora(8, 8, r=2))
    tnpeft.save_graph(g, tmp_path / "g")
    with pytest.raises(WriteError, match="holds a graph"):
        save_adapter(lora_model(), tmp_path / "g")
    save_adapter(lora_model(), tmp_path / "a")
    with pytest.raises(WriteError, match="holds a tnpeft adapter"):
        tnpeft.save_graph(g, tmp_path / "a")
    tnpeft.save_graph(g, tmp_path / "a", overwrite=True)
    assert files(tmp_path / "a") == {"graph.json", "graph.safetensors"}
    assert tnpeft.load_graph(tmp_path / "a").graph.to_json() == g.graph.to_json()


def test_an_adapter_config_of_an_unknown_format_is_not_replaced_silently(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    (d / "adapter_config.json").write_text('{"something": "else"}')
    with pytest.raises(WriteError, match="adapter checkpoint of another format"):
        save_adapter(lora_model(), d)
    assert checkpoint_kinds(d) == {"adapter checkpoint of another format": ["adapter_config.json"]}


# ------------------------------------------------------------------ killed saves and waiting saves
KILLED_SAVE = """
import sys, time
sys.path.insert(0, sys.argv[2])
import torch
from conftest import tiny_gpt2
import tnpeft, tnpeft.fileio as fileio
m = tnpeft.inject(tiny_gpt2(), tnpeft.AdapterConfig("lora", ["c_attn"], r=2, init_b="normal"),
                  rng=torch.Generator().manual_seed(9))
def stall(step):
    if step == "temporary files written":
        print("stalled", flush=True)
        time.sleep(600)
fileio.save_step_hook = stall
tnpeft.save_adapter(m, sys.argv[1])
"""


def test_a_killed_saves_temporary_files_go_with_the_next_save(tmp_path):
    d = tmp_path / "a"
    first, second = lora_model(0), lora_model(1)
    save_adapter(first, d)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tnpeft.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(d), str(Path(__file__).parent)],
                            stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"stalled"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = sorted(n for n in files(d) if n.endswith(".tmp"))
    assert len(left) == 2 and all(n.startswith((".adapter_model.safetensors.", ".adapter_config.json.")) for n in left)
    assert_loads_as(d, first)                                # the killed save lost nothing
    save_adapter(second, d)                                  # the dead process's lock is no obstacle
    assert files(d) == ADAPTER_FILES
    assert_loads_as(d, second)


def test_a_save_waits_for_another_and_says_who_holds_the_folder(tmp_path, monkeypatch):
    d = tmp_path / "a"
    held, release = threading.Event(), threading.Event()

    def holder():
        with checkpoint_folder(d, TNPEFT_ADAPTER):
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(30)
        assert (d / LOCK_NAME).exists()
        monkeypatch.setattr(tnpeft.fileio, "LOCK_TIMEOUT", 0.3)
        with pytest.raises(WriteError, match=rf"being written by another save \(process {os.getpid()}\)"):
            save_adapter(lora_model(), d)
        monkeypatch.setattr(tnpeft.fileio, "LOCK_TIMEOUT", 30.0)
        threading.Timer(0.3, release.set).start()
        t0 = time.monotonic()
        save_adapter(lora_model(), d)                       # waits until the holder is done, then writes
        assert time.monotonic() - t0 >= 0.2
    finally:
        release.set()
        t.join()
    assert files(d) == ADAPTER_FILES


def test_kinds_are_told_apart_by_their_files(tmp_path):
    lo, of = lora_model(), oft_model()
    save_adapter(lo, tmp_path / "t")
    export_peft(lo, tmp_path / "p")
    export_peft(of, tmp_path / "m")
    assert checkpoint_kinds(tmp_path / "t") == {TNPEFT_ADAPTER: sorted(ADAPTER_FILES)}
    assert checkpoint_kinds(tmp_path / "p") == {PEFT_ADAPTER: sorted(ADAPTER_FILES)}
    assert checkpoint_kinds(tmp_path / "m") == {MODEL: ["model.safetensors", "config.json"]}
    assert checkpoint_kinds(tmp_path / "nothing") == {}
