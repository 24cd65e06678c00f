"""Chunked, fused head losses (gpt2/losses.py) against the plain ones that hold every logit:
F.linear + F.cross_entropy, and the distillation formula written out below. Values and gradients agree to
1e-5 in float32 for chunk sizes that do and do not divide the N = B * T rows; no tensor of N x V is
ever created."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from gpt2.losses import (IGNORE_INDEX, _weight_grad_mode, default_chunk_size, linear_cross_entropy, linear_kd_loss,
                         mixed_addmm, weight_grad_path)

B, T, C, V = 2, 37, 24, 1000  # N = 74 rows
CHUNKS = [16, 25, None]  # 16 and 25 do not divide 74; None: the default, larger than N (one chunk)
EXACT = dict(rtol=1e-5, atol=1e-5)  # float32, chunked or not: the same sums in another order


def draw(seed: int = 0, masked: int = 5, teacher_width: int = 32):
    """Student hidden (B, T, C) and head (V, C) requiring grad, a teacher's (B, T, C') and (V, C'), targets
    (B, T) with `masked` positions ignored. Logits of std ~3, so that the softmaxes are far from uniform."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, C, generator=g).requires_grad_()
    weight = (torch.randn(V, C, generator=g) * 0.6).requires_grad_()
    teacher_hidden = torch.randn(B, T, teacher_width, generator=g)
    teacher_weight = torch.randn(V, teacher_width, generator=g) * 0.6
    targets = torch.randint(0, V, (B, T), generator=g)
    targets.view(-1)[torch.randperm(B * T, generator=g)[:masked]] = IGNORE_INDEX
    return hidden, weight, teacher_hidden, teacher_weight, targets


def reference_ce(hidden, weight, targets, reduction="mean"):
    logits = F.linear(hidden, weight).float()  # (B, T, V): every logit at once
    return F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=IGNORE_INDEX, reduction=reduction)


def reference_kd(hidden, weight, teacher_hidden, teacher_weight, targets, *, temperature, kd_weight):
    """The distillation loss on the full logits, as gpt2/kd.py's kd_loss computed it before gpt2/losses.py."""
    student = F.linear(hidden, weight).float().view(-1, V)  # (N, V)
    with torch.no_grad():
        teacher = F.linear(teacher_hidden, teacher_weight).float().view(-1, V)  # (N, V)
    y = targets.view(-1)
    ce = F.cross_entropy(student, y, ignore_index=IGNORE_INDEX)
    valid = (y != IGNORE_INDEX).float()
    log_q = F.log_softmax(student / temperature, dim=-1)
    log_p = F.log_softmax(teacher / temperature, dim=-1)
    kl = ((log_p.exp() * (log_p - log_q)).sum(-1) * valid).sum() / valid.sum()
    return kd_weight * temperature**2 * kl + (1 - kd_weight) * ce, {"kl": kl, "ce": ce}


def grads(loss, *inputs):
    """d loss / d inputs; for reduction="none", of a weighted sum, so that each row's grad_output differs."""
    if loss.dim() == 1:
        loss = (loss * torch.linspace(0.5, 2.0, loss.numel())).sum()
    return torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("chunk_size", CHUNKS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_and_gradients_match_the_full_logits(reduction, chunk_size):
    hidden, weight, _, _, targets = draw()
    loss = linear_cross_entropy(hidden, weight, targets, reduction=reduction, chunk_size=chunk_size)
    expected = reference_ce(hidden, weight, targets, reduction)
    torch.testing.assert_close(loss, expected, **EXACT)
    for got, want in zip(grads(loss, hidden, weight), grads(expected, hidden, weight)):
        torch.testing.assert_close(got, want, **EXACT)
    if reduction == "none":
        assert loss.shape == (B * T,) and (loss[targets.view(-1) == IGNORE_INDEX] == 0).all()


@pytest.mark.parametrize("chunk_size", [16, None])
def test_tied_weight_used_by_the_embedding_too(chunk_size):
    """The head's weight is also the token embedding (as in GPT): its gradient is the sum of both uses."""
    _, weight, _, _, targets = draw()
    idx = torch.randint(0, V, (B, T))
    mix = torch.randn(C, C) / C**0.5

    def forward(loss_fn):
        hidden = F.layer_norm(torch.tanh(F.embedding(idx, weight) @ mix), (C,))  # (B, T, C)
        return loss_fn(hidden)

    loss = forward(lambda h: linear_cross_entropy(h, weight, targets, chunk_size=chunk_size))
    expected = forward(lambda h: reference_ce(h, weight, targets))
    torch.testing.assert_close(loss, expected, **EXACT)
    torch.testing.assert_close(grads(loss, weight)[0], grads(expected, weight)[0], **EXACT)


def test_gradients_scale_with_grad_output_and_accumulate():
    """backward scales the stored gradients: (3 * loss).backward() twice gives 6 x d loss."""
    hidden, weight, _, _, targets = draw()
    expected = grads(reference_ce(hidden, weight, targets), hidden, weight)
    for _ in range(2):
        (3 * linear_cross_entropy(hidden, weight, targets, chunk_size=16)).backward()
    torch.testing.assert_close(hidden.grad, 6 * expected[0], **EXACT)
    torch.testing.assert_close(weight.grad, 6 * expected[1], **EXACT)


def test_a_frozen_head_gets_no_gradient():
    hidden, weight, _, _, targets = draw()
    frozen = weight.detach()
    loss = linear_cross_entropy(hidden, frozen, targets, chunk_size=16)
    loss.backward()
    assert frozen.grad is None
    torch.testing.assert_close(hidden.grad, grads(reference_ce(hidden, frozen, targets), hidden)[0], **EXACT)


@pytest.mark.parametrize("grad_mode", [torch.no_grad, torch.inference_mode])
def test_without_grad_the_value_is_the_same_and_no_gradient_is_computed(grad_mode, monkeypatch):
    hidden, weight, teacher_hidden, teacher_weight, targets = draw()
    expected_ce = linear_cross_entropy(hidden, weight, targets, chunk_size=16)
    expected_rows = linear_cross_entropy(hidden, weight, targets, reduction="none", chunk_size=16)
    expected_kd, _ = linear_kd_loss(hidden, weight, teacher_hidden, teacher_weight, targets, temperature=2.0,
                                    kd_weight=0.5, chunk_size=16)

    def no_gradient_work(*args):
        raise AssertionError("gradients were computed with grad mode off")

    monkeypatch.setattr("gpt2.losses._HeadGrads.add", no_gradient_work)
    with grad_mode():
        ce = linear_cross_entropy(hidden, weight, targets, chunk_size=16)
        rows = linear_cross_entropy(hidden, weight, targets, reduction="none", chunk_size=16)
        kd, _ = linear_kd_loss(hidden, weight, teacher_hidden, teacher_weight, targets, temperature=2.0, kd_weight=0.5,
                               chunk_size=16)
    assert ce.grad_fn is None and rows.grad_fn is None and kd.grad_fn is None
    # with and without the gradient are two graphs of the chunk function (or, past torch.compile's recompile
    # limit, one compiled and one eager): the same sums, fused differently
    for got, want in ((ce, expected_ce), (rows, expected_rows), (kd, expected_kd)):
        torch.testing.assert_close(got, want.detach(), **EXACT)


def test_all_targets_ignored():
    """Cross-entropy: as F.cross_entropy, a nan mean, a zero sum and zero gradients. Distillation: 0, no nan."""
    hidden, weight, teacher_hidden, teacher_weight, _ = draw()
    targets = torch.full((B, T), IGNORE_INDEX)
    mean = linear_cross_entropy(hidden, weight, targets, chunk_size=16)
    assert mean.isnan() and reference_ce(hidden, weight, targets).isnan()
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads(mean, hidden, weight))
    assert linear_cross_entropy(hidden, weight, targets, reduction="sum") == 0
    loss, parts = linear_kd_loss(hidden, weight, teacher_hidden, teacher_weight, targets, temperature=2.0, kd_weight=0.5)
    assert loss == 0 and parts["kl"] == 0 and parts["ce"] == 0
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads(loss, hidden, weight))


@pytest.mark.parametrize("chunk_size", CHUNKS)
@pytest.mark.parametrize("temperature, kd_weight", [(1.0, 0.5), (2.0, 0.0), (2.0, 1.0), (4.0, 0.9), (0.5, 0.3)])
def test_kd_loss_and_gradients_match_the_full_logits(temperature, kd_weight, chunk_size):
    hidden, weight, teacher_hidden, teacher_weight, targets = draw()
    loss, parts = linear_kd_loss(hidden, weight, teacher_hidden, teacher_weight, targets, temperature=temperature,
                                 kd_weight=kd_weight, chunk_size=chunk_size)
    expected, expected_parts = reference_kd(hidden, weight, teacher_hidden, teacher_weight, targets,
                                            temperature=temperature, kd_weight=kd_weight)
    torch.testing.assert_close(loss, expected, **EXACT)
    torch.testing.assert_close(parts["kl"], expected_parts["kl"], **EXACT)
    torch.testing.assert_close(parts["ce"], expected_parts["ce"], **EXACT)
    assert parts["kl"].grad_fn is None and parts["ce"].grad_fn is None
    for got, want in zip(grads(loss, hidden, weight), grads(expected, hidden, weight)):
        torch.testing.assert_close(got, want, **EXACT)


def test_no_gradient_reaches_the_teacher():
    hidden, weight, teacher_hidden, teacher_weight, targets = draw()
    teacher_hidden.requires_grad_()
    teacher_weight.requires_grad_()
    loss, _ = linear_kd_loss(hidden, weight, teacher_hidden, teacher_weight, targets, temperature=2.0, kd_weight=0.5)
    loss.backward()
    assert teacher_hidden.grad is None and teacher_weight.grad is None and hidden.grad is not None


def test_kd_rejects_bad_arguments():
    hidden, weight, teacher_hidden, teacher_weight, targets = draw()
    with pytest.raises(ValueError, match="temperature"):
        linear_kd_loss(hidden, weight, teacher_hidden, teacher_weight, targets, temperature=0.0, kd_weight=0.5)
    with pytest.raises(ValueError, match="kd_weight"):
        linear_kd_loss(hidden, weight, teacher_hidden, teacher_weight, targets, temperature=1.0, kd_weight=1.5)
    with pytest.raises(ValueError, match="vocabulary"):
        linear_kd_loss(hidden, weight, teacher_hidden, teacher_weight[:-1], targets, temperature=1.0, kd_weight=0.5)
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(hidden, weight, targets, reduction="mean_over_rows")
    with pytest.raises(ValueError, match="chunk_size"):
        linear_cross_entropy(hidden, weight, targets, chunk_size=0)


# bf16 autocast against the float32 reference: bf16 keeps 8 bits of mantissa, so logits of size ~3 are off by
# ~1e-2 each; averaged over the rows the loss moves ~1e-3, the gradients ~1e-2 of their largest entry.
BF16_LOSS = dict(rtol=2e-3, atol=2e-3)
BF16_GRAD = 2e-2  # max |difference| relative to the largest |entry|


def assert_grads_close_bf16(got, want):
    for g, w in zip(got, want):
        assert g.dtype == w.dtype == torch.float32  # returned in the inputs' dtype, not autocast's
        assert (g - w).abs().max() <= BF16_GRAD * w.abs().max()


def test_bf16_autocast_is_close_to_float32():
    hidden, weight, teacher_hidden, teacher_weight, targets = draw()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ce = linear_cross_entropy(hidden, weight, targets, chunk_size=16)
        kd, _ = linear_kd_loss(hidden, weight, teacher_hidden, teacher_weight, targets, temperature=2.0, kd_weight=0.5,
                               chunk_size=16)
        ce_plain = reference_ce(hidden, weight, targets)  # the same autocast, every logit at once
    assert ce.dtype == kd.dtype == torch.float32
    torch.testing.assert_close(ce, ce_plain, **BF16_LOSS)
    torch.testing.assert_close(ce, reference_ce(hidden, weight, targets), **BF16_LOSS)
    expected_kd, _ = reference_kd(hidden, weight, teacher_hidden, teacher_weight, targets, temperature=2.0, kd_weight=0.5)
    torch.testing.assert_close(kd, expected_kd, **BF16_LOSS)
    assert_grads_close_bf16(grads(ce, hidden, weight), grads(reference_ce(hidden, weight, targets), hidden, weight))
    assert_grads_close_bf16(grads(kd, hidden, weight), grads(expected_kd, hidden, weight))


def test_bf16_inputs_get_bf16_gradients():
    """A model cast to bf16 (no autocast): the multiplies run in bf16, the gradients come back in bf16."""
    hidden, weight, _, _, targets = draw()
    h16, w16 = hidden.detach().bfloat16().requires_grad_(), weight.detach().bfloat16().requires_grad_()
    loss = linear_cross_entropy(h16, w16, targets, chunk_size=16)
    torch.testing.assert_close(loss, reference_ce(h16, w16, targets), **BF16_LOSS)
    got, want = grads(loss, h16, w16), grads(reference_ce(hidden, weight, targets), hidden, weight)
    for g, w in zip(got, want):
        assert g.dtype == torch.bfloat16
        assert (g.float() - w).abs().max() <= BF16_GRAD * w.abs().max()


def test_float16_autocast_keeps_the_small_gradients():
    """Under fp16 autocast the 1 / n_valid of the mean is applied after the head's multiplies: folded into
    d loss / d logits first, p / n_valid (~5e-7 here) would be cast to fp16's subnormals and lose its digits.
    Checked on the rows of the weight's gradient that no target points at, made of those small entries only."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2048, C, generator=g).requires_grad_()
    weight = (torch.randn(V, C, generator=g) * 0.05).requires_grad_()  # near-uniform softmax: p ~ 1 / V
    targets = torch.randint(0, V // 2, (2048,), generator=g)  # the upper half of the vocabulary is never a target
    expected = grads(reference_ce(hidden, weight, targets), weight)[0][V // 2:]
    with torch.autocast("cpu", dtype=torch.float16):
        loss = linear_cross_entropy(hidden, weight, targets, chunk_size=256)
    got = grads(loss, weight)[0][V // 2:]
    assert (got - expected).norm() <= 2e-3 * expected.norm()  # 1.4e-2 with the scale folded in first


class LargestTensor(TorchDispatchMode):
    """Records the most elements of any tensor an operator returns (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def test_no_tensor_holds_every_logit():
    """N = 2048 rows in chunks of 64: the largest tensor is a chunk's logits (N x C and V x C are smaller).
    A dispatch mode sees eager operators only, so the chunks run as written here (force_eager); compiled,
    the same graph holds the same (chunk, V) buffers, fewer of them."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2048, C, generator=g).requires_grad_()
    weight = torch.randn(V, C, generator=g).requires_grad_()
    teacher_hidden, teacher_weight = torch.randn(2048, C, generator=g), torch.randn(V, C, generator=g)
    targets = torch.randint(0, V, (2048,), generator=g)
    for loss_fn in (lambda: linear_cross_entropy(hidden, weight, targets, chunk_size=64),
                    lambda: linear_kd_loss(hidden, weight, teacher_hidden, teacher_weight, targets, temperature=2.0,
                                           kd_weight=0.5, chunk_size=64)[0]):
        with torch.compiler.set_stance("force_eager"), LargestTensor() as largest:
            loss_fn().backward()
        assert largest.numel == 64 * V  # (chunk, V) logits; N x V would be 32 times more


@pytest.mark.parametrize("backend, autocast", [("aot_eager", False), ("aot_eager", True),
                                               pytest.param("inductor", False, marks=pytest.mark.slow)])
def test_compiled_whole_graph_gives_the_same_loss_and_gradients(backend, autocast):
    """torch.compile(fullgraph=True) of a model-like step (tied embedding and head): no graph break, same numbers,
    with and without bf16 autocast inside. aot_eager checks the tracing in a few seconds; inductor (C++
    compilation, ~20 s on 2 cores) the generated code."""
    _, weight, teacher_hidden, teacher_weight, targets = draw()
    idx = torch.randint(0, V, (B, T))
    mix = torch.randn(C, C, requires_grad=True)

    def step(idx, targets):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            hidden = F.layer_norm(torch.tanh(F.embedding(idx, weight) @ mix), (C,))  # (B, T, C)
            ce = linear_cross_entropy(hidden, weight, targets, chunk_size=16)
            kd, _ = linear_kd_loss(hidden, weight, teacher_hidden, teacher_weight, targets, temperature=2.0,
                                   kd_weight=0.5, chunk_size=16)
        return ce + kd

    torch._dynamo.reset()
    compiled = torch.compile(step, backend=backend, fullgraph=True)
    loss, expected = compiled(idx, targets), step(idx, targets)
    torch.testing.assert_close(loss, expected, **EXACT)
    for got, want in zip(grads(loss, weight, mix), grads(expected, weight, mix)):
        torch.testing.assert_close(got, want, **EXACT)


def test_a_second_backward_through_the_graph_fails_loudly():
    """backward scales the stored gradients in place (no second (V, C) tensor), so it can run once only."""
    hidden, weight, _, _, targets = draw()
    loss = linear_cross_entropy(hidden, weight, targets, chunk_size=16)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_chunks_are_sized_for_the_device():
    """Far larger chunks on a GPU: the head's float32 weight gradient is read and written once per chunk, so at
    B=16, T=1024 256-row chunks would stream it 64 times. A float32 sum of bf16 products is added in place
    where addmm can do it (out_dtype, CUDA); this CPU's addmm cannot, and takes the bf16 product then the add."""
    assert default_chunk_size(torch.device("cuda")) == 2048 and default_chunk_size(torch.device("cpu")) == 256
    assert not mixed_addmm("cpu")
    # One decision, read by the loss and by the line it prints: a float32 addmm_, or here the bf16 product.
    assert _weight_grad_mode("cpu", torch.float32) == "float32" and weight_grad_path("cpu", torch.float32) == \
        "float32 addmm_"
    assert _weight_grad_mode("cpu", torch.bfloat16) == "product" and "product added" in weight_grad_path(
        "cpu", torch.bfloat16)
    assert _weight_grad_mode("cuda", torch.bfloat16, probe=False) == "product"  # inside a compiled graph: no probe


def test_the_chunk_function_compiles_once_for_every_chunk_and_batch():
    """The loss chunks run one compiled graph per loss: 10 and then 6 chunks of 32 rows (N = 300 and 170, the last
    chunk padded with ignored rows each time) compile the cross-entropy's chunk function once, and the
    distillation's once for two temperatures (0-d tensor inputs of the graph, not constants). Counted from an
    empty cache (the other tests' graphs, of other shapes, would make the first compile a dynamic-shape one)."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(700, 20, generator=g).requires_grad_()
    teacher_weight = torch.randn(700, 12, generator=g)
    graphs = torch._dynamo.utils.counters["stats"]
    before = graphs["unique_graphs"]
    for n_rows in (300, 170):
        hidden = torch.randn(n_rows, 20, generator=g).requires_grad_()
        targets = torch.randint(0, 700, (n_rows,), generator=g)
        targets[::7] = IGNORE_INDEX
        loss = linear_cross_entropy(hidden, weight, targets, chunk_size=32)
        torch.testing.assert_close(loss, reference_ce_rows(hidden, weight, targets), **EXACT)
        loss.backward()
    assert graphs["unique_graphs"] - before == 1
    for temperature in (2.0, 3.0):
        hidden = torch.randn(300, 20, generator=g).requires_grad_()
        linear_kd_loss(hidden, weight, torch.randn(300, 12, generator=g), teacher_weight,
                       torch.randint(0, 700, (300,), generator=g), temperature=temperature, kd_weight=0.5,
                       chunk_size=32)[0].backward()
    assert graphs["unique_graphs"] - before == 2


def reference_ce_rows(hidden, weight, targets):
    return F.cross_entropy(F.linear(hidden, weight), targets, ignore_index=IGNORE_INDEX)
