"""Frames of equal shape are computed in one batched pass per forward; the results and gradients
must equal per-module computation, including with gradient accumulation, copies and eval mode."""

import copy

import torch
from conftest import tiny_gpt2

import tnpeft
from tnpeft.nn import tn_layers
from tnpeft.params.unitary import FrameModule


def frame_modules(model):
    return [m for m in model.modules() if isinstance(m, FrameModule)]


def qpeft(param="pauli"):
    base = tiny_gpt2()
    return tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("quantum_peft", ["c_attn", "c_proj", "c_fc"],
                                                                    rank=3, param=param))


def unbatched_copy(model):
    c = copy.deepcopy(model)
    for m in frame_modules(c):
        m.__dict__["scope"] = None
    return c


def test_batched_equals_per_module_values_and_gradients():
    for param in ("pauli", "cayley", "givens"):
        m = qpeft(param)
        with torch.no_grad():
            for _, layer in tn_layers(m):
                layer.tn_adapters["default"].L.weight.normal_()
        ref = unbatched_copy(m)
        ids = torch.randint(0, 97, (2, 10))
        for model in (m, ref):
            model(ids, labels=ids).loss.backward()
        torch.testing.assert_close(m(ids).logits, ref(ids).logits, atol=1e-6, rtol=1e-6)
        for (n1, p1), (n2, p2) in zip(m.named_parameters(), ref.named_parameters()):
            assert n1 == n2
            if p1.grad is not None or p2.grad is not None:
                torch.testing.assert_close(p1.grad, p2.grad, atol=1e-6, rtol=1e-5)


def test_frames_are_shared_within_a_forward():
    m = qpeft()
    calls = []
    orig = type(frame_modules(m)[0])._compute

    def counting(self, flat):
        calls.append(flat.shape[0])
        return orig(self, flat)

    type(frame_modules(m)[0])._compute = counting
    try:
        ids = torch.randint(0, 97, (2, 10))
        m(ids)
        # tiny GPT-2 (width 32): V frames 32×3 in every layer and U frames 32×3 of c_proj layers share
        # one computation; 96×3 (c_attn U) and 128×3 (c_fc U; mlp c_proj V) one each
        assert len(calls) == 3 and sum(calls) == len(frame_modules(m))
        m(ids)
        assert len(calls) == 6  # a new forward recomputes
    finally:
        type(frame_modules(m)[0])._compute = orig


def test_gradient_accumulation_and_updates_between_forwards():
    m = qpeft()
    ref = unbatched_copy(m)
    ids = torch.randint(0, 97, (2, 10))
    for model in (m, ref):
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        for _ in range(2):
            model(ids, labels=ids).loss.backward()   # two forwards/backwards per step
            model(ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()
    torch.testing.assert_close(m(ids).logits, ref(ids).logits, atol=1e-5, rtol=1e-5)


def test_copies_do_not_share_frames_and_eval_works():
    m = qpeft()
    c = copy.deepcopy(m)
    ids = torch.randint(0, 97, (2, 10))
    m(ids, labels=ids).loss.backward()
    c(ids, labels=ids).loss.backward()  # would fail if c reused m's (freed) graph
    with torch.no_grad():
        y = m.eval()(ids).logits
    torch.testing.assert_close(m(ids).logits, y)


def test_a_deep_copy_batches_from_its_second_forward():
    m = copy.deepcopy(qpeft())
    calls = []
    cls = type(frame_modules(m)[0])
    orig = cls._compute

    def counting(self, flat):
        calls.append(flat.shape[0])
        return orig(self, flat)

    cls._compute = counting
    try:
        ids = torch.randint(0, 97, (2, 10))
        m(ids)
        assert len(calls) == len(frame_modules(m))  # first forward: each frame alone, no regrouping storm
        calls.clear()
        m(ids)
        assert len(calls) == 3  # then one batched pass per shape
    finally:
        cls._compute = orig


def _qpa_model():
    base = tiny_gpt2()
    return tnpeft.inject(copy.deepcopy(base), tnpeft.AdapterConfig("qpa", ["c_attn", "c_proj", "c_fc"], r=2,
                                                                    chunk_size=16, hidden=[8, 8], qnn_layers=2))


def test_qpa_hypernetworks_of_one_shape_run_as_one_batch():
    from tnpeft.params.hypernetworks import QPAHyperNetwork

    m = _qpa_model()
    nets = [g for g in m.modules() if isinstance(g, QPAHyperNetwork)]
    assert len({g.shape for g in nets}) < len(nets)        # several layers share a shape
    ref = copy.deepcopy(m)
    for g in (g for g in ref.modules() if isinstance(g, QPAHyperNetwork)):
        g.__dict__["scope"] = None                             # each one alone
    with torch.no_grad():
        for p in list(m.parameters()):
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
        ref.load_state_dict(m.state_dict())
    ids = torch.randint(0, 97, (2, 10))
    for model in (m, ref):
        model(ids, labels=ids).loss.backward()
    torch.testing.assert_close(m(ids).logits, ref(ids).logits, atol=1e-6, rtol=1e-6)
    for (n1, p1), (n2, p2) in zip(m.named_parameters(), ref.named_parameters()):
        assert n1 == n2
        if p1.grad is not None or p2.grad is not None:
            torch.testing.assert_close(p1.grad, p2.grad, atol=1e-6, rtol=1e-5)
    # and the batch is computed once per forward: one simulation per shape
    calls = []
    orig = QPAHyperNetwork.compute_group

    def counting(members):
        calls.append(len(members))
        return orig(members)

    QPAHyperNetwork.compute_group = staticmethod(counting)
    try:
        m(ids, labels=ids).loss.backward()
        assert sum(calls) == len(nets) and len(calls) == len({g.shape for g in nets})
    finally:
        QPAHyperNetwork.compute_group = staticmethod(orig)
