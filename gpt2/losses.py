"""Losses of the language-model head that never hold the whole (B, T, V) float32 logits.

    linear_cross_entropy  the mean next-token loss; it equals, value and gradients, the one line
                              F.cross_entropy((hidden @ weight.T).float().flatten(0, -2), targets.flatten())
    linear_kd_loss        w * T^2 * KL(teacher || student, both softened by T) + (1 - w) * CE(student), w = kd_weight,
                          the distillation loss (Hinton et al., 2015) of the two models' hidden @ weight.T

At the gpt2 shape one (B, T) = (2, 1024) batch has 2,048 x 50,257 logits: 412 MB in float32, and the
plain loss keeps three or four such tensors alive (logits, log-softmax, their gradients; twice that
for distillation). Here the rows (the N = B * T positions) are processed `chunk_size` at a time, the
"fused linear cross-entropy" of Liger-Kernel and Apple's Cut Cross-Entropy (one chunk loop, `_head_chunks`,
serves both losses): for each chunk the forward pass computes the logits, the loss, and at once
d loss / d logits, turned straight into the chunk's
gradient of the hidden states and the running gradient of the head's weight. Nothing of size N x V is
kept; backward only scales the stored gradients by grad_output, so the head costs the same three
matrix multiplies as before and is never recomputed. When no gradient is wanted (no_grad,
inference_mode, or nothing requires grad) the gradient work is skipped.

Each chunk is one call of a small pure function (`_ce_chunk`, `_kd_chunk`: logits, the loss's sums and
d loss / d logits) compiled by torch.compile, on a GPU and on the CPU: inductor fuses the upcast, the
log-sum-exp, the softmax minus one-hot, the mask of ignored rows and the downcast into one or two passes
over the chunk's logits, where eager PyTorch makes one pass (and often one (n, V) temporary) per
operation. The last chunk is padded with ignored rows, so every chunk has one shape and the graph is
compiled once (`_compiled`). Where torch.compile is unavailable (`chunk_path`) the same functions run
eagerly; which path runs is printed once per process and precision.

Precision follows autocast: the matrix multiplies run in autocast's dtype (bf16 on a GPU), the softmax
and loss in float32, the weight's gradient is accumulated in float32 over the chunks (`weight_grad_path`),
and each gradient is returned in its input's dtype. Shapes: C width, V vocabulary, N rows, n rows of one chunk.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from gpt2.compat import recompile_limit_hit
from gpt2.device import compute_dtype

IGNORE_INDEX = -100  # targets with this id are not scored


def default_chunk_size(device: torch.device) -> int:
    """Rows per chunk: the work of one chunk against the memory it holds. A chunk of n rows holds about two
    (n, V) float32 buffers for the cross-entropy, five for distillation, and adds its (n, C) @ (C, V) product
    into the head's (V, C) float32 weight gradient, which is read and written once per chunk.
    On a GPU, 2,048 rows (411 MB per buffer at V = 50,257) keep that accumulator's traffic to eight passes
    per 16K-token micro-batch (64 at 256 rows: ~20 GB) and give the tensor cores 2,048 x 768 x 50,257 per
    multiply. Elsewhere 256 rows (49 MB per buffer) keep a CPU's peak low; both are multiples of 128,
    the matrix tiles' size."""
    return 2048 if device.type == "cuda" else 256


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                         reduction: str = "mean", chunk_size: int | None = None) -> torch.Tensor:
    """cross_entropy(hidden @ weight.T, targets): hidden (B, T, C) or (N, C), weight (V, C), targets (B, T) or (N,).

    As F.cross_entropy with ignore_index=-100: "mean" over the valid positions (nan when there are
    none, as F.cross_entropy gives), "sum", or "none": the NLL per position (N,), 0 where ignored.
    "none" cannot know each position's grad_output in the forward pass, so it checkpoints each chunk
    instead and recomputes its logits in backward (one chunk at a time still).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    chunk_size = _check_chunk_size(chunk_size, hidden.device)
    h, y = hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)  # (N, C), (N,)
    if reduction == "none":
        chunks = [slice(i, i + chunk_size) for i in range(0, h.size(0), chunk_size)]
        return torch.cat([checkpoint(_nll_rows, h[rows], weight, y[rows], use_reentrant=False) for rows in chunks])
    return _LinearCrossEntropy.apply(h, weight, y, reduction == "mean", chunk_size, compute_dtype(hidden),
                                     torch.is_grad_enabled())


def linear_kd_loss(hidden: torch.Tensor, weight: torch.Tensor, teacher_hidden: torch.Tensor,
                   teacher_weight: torch.Tensor, targets: torch.Tensor, *, temperature: float, kd_weight: float,
                   chunk_size: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """kd_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - kd_weight) * CE(student, targets).

    hidden (B, T, C) and teacher_hidden (B, T, C') are the two models' final hidden states, weight (V, C)
    and teacher_weight (V, C') their heads. Both terms are means over the valid positions (0 when there
    are none); the KL is summed over the vocabulary. Why T^2: the gradient of the softened KL scales as
    1 / T^2, so multiplying by T^2 keeps the two terms on the same scale whatever the temperature.
    No gradient reaches the teacher. Returns (loss, {"kl", "ce"} detached).
    """
    if not temperature > 0:
        raise ValueError(f"kd temperature (--kd_temperature) must be > 0, got {temperature}")
    if not 0 <= kd_weight <= 1:
        raise ValueError(f"kd_weight (--kd_weight) must lie in [0, 1], got {kd_weight}")
    if weight.size(0) != teacher_weight.size(0) or hidden.shape[:-1] != teacher_hidden.shape[:-1]:
        raise ValueError(f"student hidden {tuple(hidden.shape)} and head {tuple(weight.shape)} do not match the "
                         f"teacher's {tuple(teacher_hidden.shape)} and {tuple(teacher_weight.shape)}: do the two "
                         "models share the vocabulary and see the same batch?")
    chunk_size = _check_chunk_size(chunk_size, hidden.device)
    h, y = hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)  # (N, C), (N,)
    teacher_h = teacher_hidden.detach().reshape(-1, teacher_hidden.size(-1))  # (N, C')
    loss, kl, ce = _LinearKD.apply(h, weight, teacher_h, teacher_weight.detach(), y, temperature, kd_weight, chunk_size,
                                   compute_dtype(hidden), torch.is_grad_enabled())
    return loss, {"kl": kl, "ce": ce}


def _check_chunk_size(chunk_size: int | None, device: torch.device) -> int:
    if chunk_size is None:
        return default_chunk_size(device)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    return chunk_size


def _nll_rows(h: torch.Tensor, weight: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The plain per-row NLL of one chunk (n,), for reduction="none" (under autocast as F.linear is)."""
    return F.cross_entropy(F.linear(h, weight).float(), y, ignore_index=IGNORE_INDEX, reduction="none")


# ---- the per-chunk math: one function per loss, compiled once for the chunk's fixed shape ------------------


def _ce_chunk(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor,
              with_grad: bool) -> tuple[tuple[torch.Tensor], torch.Tensor | None]:
    """One chunk of the cross-entropy: h (n, C) and w (V, C) in the matmul dtype, targets y (n,).
    Returns ((the NLL summed over the valid rows, float32),) and, with_grad, d NLL / d logits (n, V) =
    softmax - onehot(y), 0 on ignored rows, in the matmul dtype. Compiled, the upcast, the log-sum-exp,
    the gradient, the mask and the downcast are one or two passes over the logits."""
    logits = (h @ w.t()).float()  # (n, V)
    valid = y != IGNORE_INDEX  # (n,)
    y = torch.where(valid, y, 0).unsqueeze(1)  # (n, 1): ignored rows point at class 0, masked below
    lse = logits.logsumexp(dim=-1, keepdim=True)  # (n, 1)
    nll = torch.where(valid, (lse - logits.gather(1, y)).squeeze(1), 0.0).sum()
    if not with_grad:
        return (nll,), None
    return (nll,), _masked(_softmax_minus_onehot(logits, lse, y), valid, h.dtype)


def _kd_chunk(h: torch.Tensor, w: torch.Tensor, teacher_h: torch.Tensor, teacher_w: torch.Tensor, y: torch.Tensor,
              temperature: torch.Tensor, kd_weight: torch.Tensor,
              with_grad: bool) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
    """One chunk of the distillation loss: the student's h (n, C), w (V, C), the teacher's (n, C'), (V, C'),
    all in the matmul dtype; temperature and kd_weight 0-d tensors (inputs of the compiled graph, not
    constants baked into it). Returns (KL(p_T || q_T) summed over V and the valid rows, the student's NLL
    summed likewise) and, with_grad, d(kd_weight T^2 KL + (1 - kd_weight) NLL) / d student logits (n, V)
    in the matmul dtype, 0 on ignored rows."""
    student = (h @ w.t()).float()  # (n, V)
    teacher = (teacher_h @ teacher_w.t()).float()  # (n, V)
    valid = y != IGNORE_INDEX
    y = torch.where(valid, y, 0).unsqueeze(1)  # (n, 1)
    log_q = F.log_softmax(student / temperature, dim=-1)  # (n, V) student, softened
    log_p = F.log_softmax(teacher / temperature, dim=-1)  # (n, V) teacher, softened
    p = log_p.exp()
    kl = torch.where(valid, (p * (log_p - log_q)).sum(-1), 0.0).sum()
    lse = student.logsumexp(dim=-1, keepdim=True)  # (n, 1)
    nll = torch.where(valid, (lse - student.gather(1, y)).squeeze(1), 0.0).sum()
    if not with_grad:
        return (kl, nll), None
    # d(T^2 KL) / d student = T (q_T - p_T): the T^2 makes up for the 1 / T^2 of the softened gradient.
    grad = kd_weight * temperature * (log_q.exp() - p) + (1 - kd_weight) * _softmax_minus_onehot(student, lse, y)
    return (kl, nll), _masked(grad, valid, h.dtype)


def _softmax_minus_onehot(logits: torch.Tensor, lse: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d NLL / d logits (n, V) from float32 logits, their log-sum-exp (n, 1) and targets (n, 1)."""
    classes = torch.arange(logits.size(-1), device=logits.device)  # (V,)
    return (logits - lse).exp() - (classes == y).float()


def _masked(grad: torch.Tensor, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.where(valid.unsqueeze(1), grad, 0.0).to(dtype)  # (n, V): ignored and padded rows add nothing


@functools.cache
def _compiled(chunk_fn):
    """chunk_fn under torch.compile, specialised to the chunk's shape: every chunk, the padded last one
    included, has the same (n, C) and (V, C), so nothing recompiles per chunk or per batch. Each further
    shape (another model, fewer rows than a chunk) or dtype gets a static graph of its own (dynamic=False):
    which kernels run for a shape never depends on what ran before, so a resumed run computes what the
    uninterrupted one did. A run holds one model shape: a handful of graphs, well under the recompile limit."""
    return torch.compile(chunk_fn, fullgraph=True, dynamic=False)


_EAGER_REASON: list[str] = []  # why the chunks run eagerly in this process, once torch.compile has failed


def _run_chunk(chunk_fn, *args):
    """chunk_fn(*args), compiled, unless compiling is unavailable here: torch.compile disabled
    (TORCHDYNAMO_DISABLE=1 runs the function as written), unsupported on this platform, or failed once
    (no C++ compiler for inductor's CPU code, say), which is printed. Inside a caller's own torch.compile
    the caller's compiler traces the plain function (its graph holds every chunk)."""
    if torch.compiler.is_compiling() or _EAGER_REASON or not torch._dynamo.is_dynamo_supported():
        return chunk_fn(*args)
    try:
        with torch.autocast(args[0].device.type, enabled=False):  # the inputs are already in the matmul dtype
            return _compiled(chunk_fn)(*args)
    except recompile_limit_hit():  # more than torch's 8 graphs of this function (dtypes x grad modes
        _warn_recompile_limit()  # x shapes: a test session, not a run): this new one runs eagerly
        return chunk_fn(*args)
    except torch._dynamo.exc.BackendCompilerFailed as e:
        _EAGER_REASON.append(str(e).splitlines()[0])
        print(f"gpt2.losses: torch.compile of the loss chunks failed ({_EAGER_REASON[0]}); they run eagerly")
        return chunk_fn(*args)


@functools.cache
def _warn_recompile_limit() -> None:
    print("gpt2.losses: the loss chunks reached torch.compile's recompile limit (torch._dynamo.config.recompile_limit);"
          " chunks of further shapes or dtypes run eagerly")


def chunk_path() -> str:
    """How this process runs the loss chunks: 'compiled (inductor)' or 'eager (why)'; printed with the weight
    gradient's path the first time a loss runs."""
    if not torch._dynamo.is_dynamo_supported():
        return "eager (torch.compile is not supported on this platform)"
    if torch._dynamo.config.disable:
        return "eager (torch.compile disabled: TORCHDYNAMO_DISABLE)"
    return f"eager ({_EAGER_REASON[0]})" if _EAGER_REASON else "compiled (inductor)"


# ---- the gradients of the head's two inputs, accumulated over the chunks ------------------------------------


def _addmm_mixed(total: torch.Tensor, g: torch.Tensor, h: torch.Tensor) -> None:
    """total (V, C) float32 += g.T (V, n) @ h (n, C), with g and h in bf16 or fp16 and the products summed
    in float32: no (V, C) temporary, no rounding of a chunk's product. The loss's own call; `mixed_addmm`
    probes exactly this one."""
    torch.addmm(total, g.t(), h, out_dtype=torch.float32, out=total)


@functools.cache
def mixed_addmm(device_type: str, dtype: torch.dtype = torch.bfloat16) -> bool:
    """Whether `_addmm_mixed` works on this device and dtype (CUDA in torch 2.13; not its CPU build): asked
    once, on a transposed (5, 3).T @ (5, 2) product checked against float32."""
    g = torch.arange(15.0, device=device_type).view(5, 3).div(8).to(dtype)  # exact in bf16 and fp16
    h = torch.arange(10.0, device=device_type).view(5, 2).div(4).to(dtype)
    total = torch.ones(3, 2, device=device_type)
    try:
        _addmm_mixed(total, g, h)
    except (RuntimeError, TypeError, NotImplementedError):
        return False
    return bool(torch.equal(total, 1 + g.float().t() @ h.float()))


def _weight_grad_mode(device_type: str, dtype: torch.dtype, probe: bool = True) -> str:
    """The one decision of how the head's weight gradient is summed over the chunks: "float32" (addmm_),
    "mixed" (`_addmm_mixed`: low-precision factors summed in float32) or "product" (each chunk's low-precision
    product added to the float32 sum). `probe=False` (inside a graph being compiled) does not ask
    `mixed_addmm`: the product path, whose ops every compiler knows."""
    if dtype == torch.float32:
        return "float32"
    return "mixed" if probe and mixed_addmm(device_type, dtype) else "product"


def weight_grad_path(device_type: str, dtype: torch.dtype) -> str:
    """How the head's weight gradient is summed over the chunks, for matmuls in `dtype` on this device, in words."""
    return {"float32": "float32 addmm_",
            "mixed": f"{_dtype_name(dtype)} factors summed in float32 (addmm out_dtype)",
            "product": f"each chunk's {_dtype_name(dtype)} product added to a float32 sum (this torch's addmm has no "
                       f"out_dtype on {device_type})"}[_weight_grad_mode(device_type, dtype)]


@functools.cache
def _announce(device_type: str, dtype: torch.dtype) -> None:
    print(f"gpt2.losses on {device_type}, matmuls in {_dtype_name(dtype)}: chunks {chunk_path()}; "
          f"weight gradient: {weight_grad_path(device_type, dtype)}")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class _HeadGrads:
    """The gradients of hidden (N, C) and weight (V, C), built one chunk at a time from d loss / d logits.

    The weight's gradient is a sum over every chunk: it is accumulated in float32 whatever the matmul
    dtype (`weight_grad_path`). `needs` = (hidden requires grad, weight does): a frozen head or input skips
    its multiply, and with grad mode off (no_grad, inference_mode: Function.forward cannot see it, the
    caller passes it) both.
    """

    def __init__(self, hidden: torch.Tensor, weight: torch.Tensor, needs: tuple[bool, bool], grad_enabled: bool):
        self.hidden_dtype, self.weight_dtype = hidden.dtype, weight.dtype
        self.need_hidden, self.need_weight = grad_enabled and needs[0], grad_enabled and needs[1]
        self.hidden_chunks: list[torch.Tensor] = []  # (n, C) each
        self.weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if self.need_weight else None
        self.product: torch.Tensor | None = None  # (V, C) in the matmul dtype, where addmm cannot sum into float32

    @property
    def wanted(self) -> bool:
        return self.need_hidden or self.need_weight

    def add(self, h: torch.Tensor, w: torch.Tensor, g: torch.Tensor, rows: int) -> None:
        """One chunk: h (n, C), w (V, C) and d loss / d logits g (n, V), all in the matmul dtype, of which
        the first `rows` rows are real (the rest pad the last chunk; their g is 0)."""
        if self.need_hidden:
            self.hidden_chunks.append((g[:rows] @ w).to(self.hidden_dtype))  # (n, V) @ (V, C) -> (n, C)
        if self.need_weight:  # (V, n) @ (n, C) added in place to the float32 sum (a loss compiled with its
            # caller, as a test does, does not probe: the product path)
            mode = _weight_grad_mode(g.device.type, g.dtype, probe=not torch.compiler.is_compiling())
            if mode == "float32":
                self.weight.addmm_(g.t(), h)
            elif mode == "mixed":
                _addmm_mixed(self.weight, g, h)
            else:  # a (V, C) product in the low precision, then the add; one buffer for every chunk (a new one
                # each time costs a CPU its page faults, more than the multiply's own time at these sizes)
                self.product = torch.mm(g.t(), h, out=self.product)
                self.weight += self.product

    def result(self, scale: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The gradients times `scale` (a mean's 1 / n_valid). It is applied here, not to d loss / d logits:
        in float16, p / n_valid (a softmax entry ~1e-5 over thousands of rows) would flush to zero before
        the loss scaler's factor arrives in backward."""
        self.product = None
        hidden = (torch.cat(self.hidden_chunks) * scale).to(self.hidden_dtype) if self.need_hidden else None  # (N, C)
        weight = self.weight.mul_(scale).to(self.weight_dtype) if self.need_weight else None  # (V, C)
        return hidden, weight


def _padded(t: torch.Tensor, start: int, n: int, fill) -> torch.Tensor:
    """Rows start .. start + n of t, the last chunk filled up to n rows with `fill`: every chunk one shape."""
    part = t[start:start + n]
    if part.size(0) == n:
        return part
    return torch.cat([part, part.new_full((n - part.size(0), *part.shape[1:]), fill)])


def _head_chunks(chunk_fn, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, grads: _HeadGrads,
                 chunk_size: int, dtype: torch.dtype, teacher: tuple = ()) -> list[torch.Tensor]:
    """The chunk loop of both losses: rows n = min(chunk_size, N) at a time, the last chunk padded with
    ignored rows, `chunk_fn(h, w, *teacher_rows, y, *extra, with_grad)` on each (teacher = (teacher hidden
    (N, C'), teacher weight, *extra) for distillation), its d loss / d logits added to `grads`. Returns each
    term summed over all rows (float32)."""
    if not torch.compiler.is_compiling():  # (a caller's compiler traces the plain chunk functions: nothing to say)
        _announce(hidden.device.type, dtype)
    hidden, weight = hidden.detach(), weight.detach()  # every chunk alike to the compiled graph's guards
    n_rows = hidden.size(0)
    n = max(1, min(chunk_size, n_rows))  # at least one chunk: no rows sum to 0
    w = weight.to(dtype)  # (V, C): cast once for all chunks
    teacher_h, teacher_w, *extra = teacher or (None, None)
    teacher_w = () if teacher_w is None else (teacher_w.to(dtype),)  # (V, C'): cast once
    sums = None
    for i in range(0, max(1, n_rows), n):
        h = _padded(hidden, i, n, 0).to(dtype)  # (n, C)
        teacher_rows = () if teacher_h is None else (_padded(teacher_h, i, n, 0).to(dtype), *teacher_w)
        y = _padded(targets, i, n, IGNORE_INDEX)  # (n,)
        terms, g = _run_chunk(chunk_fn, h, w, *teacher_rows, y, *extra, grads.wanted)
        sums = list(terms) if sums is None else [s + t for s, t in zip(sums, terms)]
        if grads.wanted:
            grads.add(h, w, g, min(n, n_rows - i))
        del g  # this chunk's (n, V) buffer goes before the next chunk's is made
    return sums


def _scaled(grad: torch.Tensor | None, grad_output: torch.Tensor) -> torch.Tensor | None:
    """grad * grad_output, in place: no second (V, C) tensor at the top of the step's memory. The stored
    gradient is not needed again, and a second backward through the graph (retain_graph=True) stops at
    autograd's in-place check rather than scaling it twice."""
    return None if grad is None else grad.mul_(grad_output)


class _LinearCrossEntropy(torch.autograd.Function):
    """The sum (mean=False) or mean over the valid rows of the NLL of hidden (N, C) @ weight.T (V, C)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, mean: bool, chunk_size: int, dtype: torch.dtype, grad_enabled: bool):
        n_valid = (targets != IGNORE_INDEX).sum()
        # With no valid row the mean is nan (0 / 0) and every gradient 0, as F.cross_entropy gives.
        scale = 1 / n_valid.clamp(min=1) if mean else torch.ones((), device=hidden.device)
        grads = _HeadGrads(hidden, weight, ctx.needs_input_grad[:2], grad_enabled)
        total, = _head_chunks(_ce_chunk, hidden, weight, targets, grads, chunk_size, dtype)
        ctx.save_for_backward(*grads.result(scale))
        return total / n_valid if mean else total

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        return _scaled(grad_hidden, grad_loss), _scaled(grad_weight, grad_loss), *[None] * 5


class _LinearKD(torch.autograd.Function):
    """(loss, kl, ce) of linear_kd_loss; only loss carries a gradient, and only to the student."""

    @staticmethod
    def forward(ctx, hidden, weight, teacher_hidden, teacher_weight, targets, temperature: float, kd_weight: float,
                chunk_size: int, dtype: torch.dtype, grad_enabled: bool):
        n_valid = (targets != IGNORE_INDEX).sum().clamp(min=1)  # no valid row: every term 0, not nan
        grads = _HeadGrads(hidden, weight, ctx.needs_input_grad[:2], grad_enabled)
        numbers = [torch.tensor(x, dtype=torch.float32, device=hidden.device) for x in (temperature, kd_weight)]
        kl_sum, ce_sum = _head_chunks(_kd_chunk, hidden, weight, targets, grads, chunk_size, dtype,
                                      teacher=(teacher_hidden, teacher_weight, *numbers))
        ctx.save_for_backward(*grads.result(1 / n_valid))
        kl, ce = kl_sum / n_valid, ce_sum / n_valid
        ctx.mark_non_differentiable(kl, ce)
        return kd_weight * temperature**2 * kl + (1 - kd_weight) * ce, kl, ce

    @staticmethod
    def backward(ctx, grad_loss, _grad_kl, _grad_ce):
        grad_hidden, grad_weight = ctx.saved_tensors
        return _scaled(grad_hidden, grad_loss), _scaled(grad_weight, grad_loss), *[None] * 8  # nothing to the teacher
