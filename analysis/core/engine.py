"""The forward-pass engine every analysis uses.

It runs the bridge's processed weights (LayerNorm folded, writing weights and unembedding
centred, exactly as `enable_compatibility_mode()` leaves them) in a batched, hook-named
forward of Pythia's architecture (rotary attention, parallel attention + MLP, GELU), so that
it can do what the bridge's own forward cannot do cheaply:

* batch examples of different lengths (right padding; under a causal mask a real token
  never attends to padding, so no attention mask is needed and results equal the
  unpadded per-example pass up to float rounding);
* stop at the last layer an analysis needs (no unembedding for activation statistics);
* restart an ablated pass from the cached residual stream at the ablated layer;
* compute the next-token loss in row chunks without materialising a whole batch's logits;
* run its matmuls in bfloat16 (`--dtype bfloat16`, `Weights.to_precision`) while the
  residual stream, LayerNorm, softmax, GELU, log-sum-exp and losses stay float32
  (`analysis.core.precision` says why and how).

Interventions are keyed by the hook names TransformerLens writes
(`blocks.3.mlp.hook_post`, `blocks.5.mlp.hook_pre`, `blocks.4.hook_resid_pre`, ...):
an `Edits` mapping is `{hook_name: fn(tensor) -> tensor}`, like a `fwd_hooks` list.
`tests/test_engine.py` checks the engine against the bridge's own forward.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

Edit = Callable[[Tensor], Tensor]
Edits = Mapping[str, Edit]

# Rows of logits formed at a time for the loss: 128 x 50,304 fp32 (26 MB) was the fastest
# of 32-1024 on Pythia-70M's vocabulary here (the log-sum-exp passes stay in cache).
LOSS_CHUNK_ROWS = 128

SUPPORTED_HOOKS = (
    "hook_resid_pre", "hook_attn_out", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out",
    "hook_resid_post",
)


@dataclass
class Weights:
    """Processed weights in TransformerLens shapes (see `from_bridge`)."""

    W_E: Float[Tensor, "d_vocab d_model"]
    W_Q: Float[Tensor, "n_layers n_heads d_model d_head"]
    b_Q: Float[Tensor, "n_layers n_heads d_head"]
    W_K: Float[Tensor, "n_layers n_heads d_model d_head"]
    b_K: Float[Tensor, "n_layers n_heads d_head"]
    W_V: Float[Tensor, "n_layers n_heads d_model d_head"]
    b_V: Float[Tensor, "n_layers n_heads d_head"]
    W_O: Float[Tensor, "n_layers n_heads d_head d_model"]
    b_O: Float[Tensor, "n_layers d_model"]
    W_in: Float[Tensor, "n_layers d_model d_mlp"]
    b_in: Float[Tensor, "n_layers d_mlp"]
    W_out: Float[Tensor, "n_layers d_mlp d_model"]
    b_out: Float[Tensor, "n_layers d_model"]
    W_U: Float[Tensor, "d_model d_vocab"]
    b_U: Float[Tensor, "d_vocab"]
    rotary_dim: int
    rotary_base: float
    eps: float

    @property
    def n_layers(self) -> int:
        return self.W_Q.shape[0]

    @property
    def n_heads(self) -> int:
        return self.W_Q.shape[1]

    @property
    def d_head(self) -> int:
        return self.W_Q.shape[3]

    @property
    def d_mlp(self) -> int:
        return self.W_in.shape[2]

    @property
    def device(self) -> torch.device:
        return self.W_E.device

    @property
    def dtype(self) -> torch.dtype:
        """The storage dtype (float32, or bfloat16 for native bf16 matmuls)."""
        return self.W_E.dtype

    def to_precision(self, dtype: str, native: bool) -> Weights:
        """These weights rounded to `dtype` (`float32`: `self`, unchanged).

        For `bfloat16`, every tensor is rounded to bf16 once, here; `native` keeps bf16
        tensors (torch's bf16 GEMMs, CUDA), otherwise float32 tensors holding the bf16 values
        (the CPU emulation, `precision.matmul_mode`). The float32 tensors are not kept: drop
        `self` and one copy remains.

        Raises:
            UsageError: a dtype `precision.parse_dtype` refuses.
        """
        from .precision import REFERENCE_DTYPE, parse_dtype

        if parse_dtype(dtype) == REFERENCE_DTYPE:
            return self
        names = [f.name for f in fields(self) if isinstance(getattr(self, f.name), Tensor)]
        with torch.no_grad():
            cast = {n: getattr(self, n).to(torch.bfloat16) for n in names}
            if not native:
                cast = {n: t.float() for n, t in cast.items()}
        return replace(self, **cast)

    @classmethod
    def from_bridge(cls, bridge, rotary_pct: float, copy: bool = True) -> Weights:
        """The processed weights of a TransformerBridge in compatibility mode.

        `copy=True` (the report: the bridge stays alive beside the engine) clones every
        tensor. `copy=False` takes the bridge's tensors as they are where they already are
        fp32 and contiguous (the per-layer stacks are fresh tensors anyway; `W_E` then shares
        the embedding's storage): drop the bridge afterwards and only one copy of the weights
        remains, as a sweep worker does (`analysis.orchestration.sweep.task`). The numbers are the
        same either way.
        """
        names = ["W_E", "W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O",
                 "W_in", "b_in", "W_out", "b_out", "W_U", "b_U"]
        with torch.no_grad():
            t = {}
            for n in names:
                x = getattr(bridge, n).detach()
                t[n] = (x.clone() if copy else x).float().contiguous()
        cfg = bridge.cfg
        d_head = t["W_Q"].shape[3]
        return cls(
            **t,
            rotary_dim=int(d_head * rotary_pct),
            rotary_base=float(getattr(cfg, "rotary_base", 10000) or 10000),
            eps=float(getattr(cfg, "eps", 1e-5)),
        )


def layer_norm_pre(x: Float[Tensor, "... d_model"], eps: float) -> Float[Tensor, "... d_model"]:
    """LayerNorm without weights (TransformerLens `LNPre`): the folded form, `(x - mean) /
    sqrt(var + eps)` with the biased variance, in one fused kernel."""
    return F.layer_norm(x, x.shape[-1:], eps=eps)


def _rotary_tables(n_pos: int, rotary_dim: int, base: float, device) -> tuple[Tensor, Tensor]:
    inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64, device=device).float() / rotary_dim))
    pos = torch.arange(n_pos, device=device, dtype=torch.int64).float()
    freqs = torch.outer(pos, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def _apply_rotary_(x: Float[Tensor, "batch pos head d_head"], cos: Tensor, sin: Tensor, rotary_dim: int) -> None:
    """Rotate the first `rotary_dim` dims of each head in place (GPT-NeoX: halves, not
    interleaved); `x` is a fresh projection, so nothing else sees the old values."""
    x_rot = x[..., :rotary_dim]
    half = rotary_dim // 2
    rotated = torch.cat([-x_rot[..., half:], x_rot[..., :half]], dim=-1)
    x_rot.copy_(x_rot * cos[None, :, None, :] + rotated * sin[None, :, None, :])


@dataclass
class _Fused:
    """Per-layer 2-D weights for `torch.addmm` (the same numbers as `Weights`, rearranged)."""

    W_qkv: Tensor  # [d_model, 3 * n_heads * d_head]
    b_qkv: Tensor  # [3 * n_heads * d_head]
    W_O: Tensor    # [n_heads * d_head, d_model]


def _fuse(w: Weights) -> list[_Fused]:
    def cols(W: Tensor, layer: int) -> Tensor:  # [h, d, e] -> [d, h*e]
        return W[layer].permute(1, 0, 2).reshape(W.shape[2], -1)

    out = []
    for layer in range(w.n_layers):
        out.append(_Fused(
            W_qkv=torch.cat([cols(w.W_Q, layer), cols(w.W_K, layer), cols(w.W_V, layer)], 1).contiguous(),
            b_qkv=torch.cat([w.b_Q[layer].reshape(-1), w.b_K[layer].reshape(-1), w.b_V[layer].reshape(-1)]),
            W_O=w.W_O[layer].reshape(-1, w.W_O.shape[-1]).contiguous(),
        ))
    return out


class Forward:
    """A hook-named forward over `Weights`; every method is a pure function of its inputs."""

    def __init__(self, w: Weights, dtype: str = "float32", native: bool | None = None):
        """`w`: float32 weights (`Weights.from_bridge`). `dtype`: `float32` (the reference:
        every operation in float32, exactly as before bfloat16 existed) or `bfloat16` (the
        matmuls in bf16, the rest in float32; see `analysis.core.precision`). `native`: run
        torch's bf16 GEMMs on bf16 tensors; None: on CUDA only (elsewhere the bf16 rounding
        is emulated around float32 GEMMs).

        Raises:
            UsageError: a dtype `precision.parse_dtype` refuses.
        """
        from .precision import REFERENCE_DTYPE, parse_dtype

        self.dtype = parse_dtype(dtype)
        native = w.device.type == "cuda" if native is None else bool(native)
        self.mode = "float32" if self.dtype == REFERENCE_DTYPE else ("native" if native else "emulated")
        self.w = w.to_precision(self.dtype, native)
        self._fused = _fuse(self.w)
        self._rope: tuple[int, Tensor, Tensor] | None = None
        self.tokens_forwarded = 0  # tokens x layers / n_layers, for the pass counters
        self.unembedded_rows = 0

    def _rope_for(self, n_pos: int):
        # Tables built under inference_mode cannot be saved for backward: a pass with
        # gradients (attribution, `families.ngrams`) rebuilds them.
        if self._rope is None or self._rope[0] < n_pos or (
                torch.is_grad_enabled() and self._rope[1].is_inference()):
            cos, sin = _rotary_tables(max(n_pos, 128), self.w.rotary_dim, self.w.rotary_base, self.w.device)
            self._rope = (max(n_pos, 128), cos, sin)
        return self._rope[1][:n_pos], self._rope[2][:n_pos]

    def operand(self, x: Tensor) -> Tensor:
        """`x` as a matmul operand against the weights: itself in float32; rounded to bf16
        in bfloat16 (a bf16 tensor when native, float32 holding bf16 values when emulated)."""
        if self.mode == "float32":
            return x
        x = x.to(torch.bfloat16)
        return x if self.mode == "native" else x.float()

    def product(self, y: Tensor) -> Tensor:
        """A matmul's result as the rest of the pass uses it: float32, rounded to bf16
        first in bfloat16 (what a bf16 GEMM returns), so every later operation is float32."""
        if self.mode == "float32":
            return y
        return y.float() if self.mode == "native" else y.to(torch.bfloat16).float()

    def matmul(self, a: Tensor, B: Tensor) -> Tensor:
        """`a @ B` for `B` a weight (or a product of weights) in this pass's precision:
        `product(operand(a) @ B)`. `a`: float32 `[..., k]`; `B`: `[k, m]` as stored in `self.w`
        (bf16 when native); returns float32 `[..., m]`."""
        return self.product(self.operand(a) @ B)

    def embed(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        # A lookup, not a matmul: the bf16 embedding row, upcast so the residual stays float32.
        return self.product(self.w.W_E[tokens])

    def block(self, layer: int, resid: Float[Tensor, "batch pos d_model"], edits: Edits | None = None,
              capture: dict | None = None) -> Float[Tensor, "batch pos d_model"]:
        """One parallel-residual block: resid + attn(LN(resid)) + mlp(LN(resid))."""
        w = self.w
        edits = edits or {}
        p = f"blocks.{layer}."

        def hook(name: str, x: Tensor) -> Tensor:
            fn = edits.get(p + name)
            if fn is not None:
                x = fn(x)
            if capture is not None and (p + name) in capture:
                capture[p + name] = x
            return x

        resid = hook("hook_resid_pre", resid)
        b, n, d = resid.shape
        h, e = w.n_heads, w.d_head
        f = self._fused[layer]
        # `op`/`out` are identities in float32; in bfloat16 they round each matmul's operands
        # and product to bf16 and hand float32 on, so only the matmuls see bf16.
        op, out = self.operand, self.product
        x = layer_norm_pre(resid, w.eps).reshape(b * n, d)
        xm = op(x)
        # Q, K, V in one matmul; views [batch, pos, head, d_head] into that buffer.
        qkv = out(torch.addmm(f.b_qkv, xm, f.W_qkv)).view(b, n, 3, h, e)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if w.rotary_dim:
            cos, sin = self._rope_for(n)
            _apply_rotary_(q, cos, sin, w.rotary_dim)
            _apply_rotary_(k, cos, sin, w.rotary_dim)
        # Explicit softmax attention (eager, fp32), as the bridge's eager path.
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [b, h, pos, e]
        scores = out(torch.matmul(op(q), op(k).transpose(-1, -2))).div_(math.sqrt(e))
        causal = torch.ones(n, n, dtype=torch.bool, device=resid.device).triu(1)
        pattern = scores.masked_fill_(causal, float("-inf")).softmax(-1)
        z = out(torch.matmul(op(pattern), op(v))).transpose(1, 2).reshape(b * n, h * e)
        attn_out = out(torch.addmm(w.b_O[layer], op(z), f.W_O)).view(b, n, d)
        attn_out = hook("hook_attn_out", attn_out)
        pre = out(torch.addmm(w.b_in[layer], xm, w.W_in[layer])).view(b, n, -1)
        pre = hook("mlp.hook_pre", pre)
        post = F.gelu(pre)
        post = hook("mlp.hook_post", post)
        mlp_out = out(torch.addmm(w.b_out[layer], op(post.reshape(b * n, -1)), w.W_out[layer])).view(b, n, d)
        mlp_out = hook("hook_mlp_out", mlp_out)
        resid = resid + attn_out + mlp_out
        self.tokens_forwarded += b * n / w.n_layers
        return hook("hook_resid_post", resid)

    def run(self, tokens: Int[Tensor, "batch pos"] | None = None, *, resid: Tensor | None = None,
            start_layer: int = 0, stop_layer: int | None = None, edits: Edits | None = None,
            capture: dict | None = None) -> Float[Tensor, "batch pos d_model"]:
        """Residual stream after block `stop_layer - 1` (all blocks by default).

        Start from `tokens` (embedding) or from `resid`, the residual stream entering block
        `start_layer` (`blocks.{start_layer}.hook_resid_pre`).
        """
        stop = self.w.n_layers if stop_layer is None else stop_layer
        if resid is None:
            assert tokens is not None and start_layer == 0
            resid = self.embed(tokens)
        for layer in range(start_layer, stop):
            resid = self.block(layer, resid, edits, capture)
        return resid

    def logits(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        """Logits (float32; bf16-rounded in bfloat16) of the final residual stream."""
        x = layer_norm_pre(resid, self.w.eps)
        lg = torch.addmm(self.w.b_U, self.operand(x.reshape(-1, x.shape[-1])), self.w.W_U)
        return self.product(lg).view(*x.shape[:-1], -1)

    def token_losses(self, resid: Float[Tensor, "batch pos d_model"], tokens: Int[Tensor, "batch pos"],
                     lengths: Int[Tensor, "batch"], chunk_rows: int = LOSS_CHUNK_ROWS) -> Float[Tensor, "batch pos_minus_1"]:
        """Next-token cross-entropy (nats) at every position with a target; 0 elsewhere.

        Position t of row i predicts token t+1; positions t >= lengths[i]-1 (the last real
        token and the padding) have no target, as in the seed's `get_average_loss` mask.
        Logits are formed `chunk_rows` rows at a time, for valid rows only.
        """
        b, n, d = resid.shape
        valid = torch.arange(n - 1, device=resid.device)[None, :] < (lengths[:, None] - 1)
        rows = resid[:, :-1][valid]
        targets = tokens[:, 1:][valid]
        # float32 whatever the matmul dtype: `logits` hands float32 to the log-sum-exp.
        out = torch.empty(rows.shape[0], device=resid.device, dtype=torch.float32)
        for s in range(0, rows.shape[0], chunk_rows):
            lg = self.logits(rows[s:s + chunk_rows])
            out[s:s + chunk_rows] = torch.logsumexp(lg, -1) - lg.gather(-1, targets[s:s + chunk_rows, None])[:, 0]
        self.unembedded_rows += rows.shape[0]
        losses = torch.zeros(b, n - 1, device=resid.device, dtype=torch.float32)
        losses[valid] = out
        return losses


@dataclass
class Batch:
    """Right-padded token batch. `index[i]` is row i's position in the caller's list."""

    tokens: Int[Tensor, "batch pos"]
    lengths: Int[Tensor, "batch"]
    index: list[int]

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())


def make_batches(token_lists: Sequence[Sequence[int]], batch_tokens: int, pad_id: int,
                 device: str | torch.device = "cpu") -> list[Batch]:
    """Group examples by length (longest first) into batches of at most `batch_tokens`
    padded tokens (a longer single example gets its own batch)."""
    order = sorted(range(len(token_lists)), key=lambda i: (-len(token_lists[i]), i))
    batches: list[Batch] = []
    cur: list[int] = []
    for i in order:
        width = len(token_lists[cur[0]]) if cur else len(token_lists[i])
        if cur and width * (len(cur) + 1) > batch_tokens:
            batches.append(_pack(token_lists, cur, pad_id, device))
            cur = []
        cur.append(i)
    if cur:
        batches.append(_pack(token_lists, cur, pad_id, device))
    return batches


def _pack(token_lists, idx: list[int], pad_id: int, device) -> Batch:
    width = max(len(token_lists[i]) for i in idx)
    t = torch.full((len(idx), width), pad_id, dtype=torch.long)
    for r, i in enumerate(idx):
        t[r, : len(token_lists[i])] = torch.tensor(token_lists[i], dtype=torch.long)
    lengths = torch.tensor([len(token_lists[i]) for i in idx], dtype=torch.long)
    return Batch(t.to(device), lengths.to(device), list(idx))


def progress(iterable: Sequence[Batch], desc: str, enabled: bool = True) -> Iterator[Batch]:
    """A tqdm bar over batches that shows tokens/s."""
    from tqdm.auto import tqdm

    total = sum(b.n_tokens for b in iterable)
    start = time.perf_counter()
    with tqdm(total=total, desc=desc, unit="tok", unit_scale=True, disable=not enabled,
              leave=False, dynamic_ncols=True) as bar:
        for b in iterable:
            yield b
            bar.update(b.n_tokens)
    _ = start


def set_neurons(indices: Sequence[int], values: Sequence[float] | float) -> Edit:
    """An edit that sets neurons `indices` of an MLP hook to `values` (mean ablation when
    the values are mean activations). Seed: `value[:, :, NEURONS] = MEAN_ACTIVATION_INACTIVE`."""
    idx = list(indices)
    vals = values

    def fn(x: Tensor) -> Tensor:
        x = x.clone()
        v = torch.as_tensor(vals, dtype=x.dtype, device=x.device)
        x[..., idx] = v
        return x

    return fn


def earliest_layer(edits: Edits) -> int:
    """The first block an edit touches (where a restarted pass must begin)."""
    layers = [int(name.split(".")[1]) for name in edits]
    return min(layers) if layers else 0


def is_final_mlp_edit(edits: Edits, n_layers: int) -> bool:
    """True when every edit is on the last layer's MLP neurons (`hook_pre`/`hook_post`):
    then the edit only adds `Δpost @ W_out` to the final residual stream."""
    last = n_layers - 1
    ok = {f"blocks.{last}.mlp.hook_pre", f"blocks.{last}.mlp.hook_post"}
    return bool(edits) and set(edits) <= ok


def _final_mlp_delta(fwd: Forward, edits: Edits, pre: Tensor, post: Tensor) -> tuple[list[int], Tensor]:
    """(edited neuron indices, Δpost at those neurons `[batch, pos, k]`) of a last-layer MLP edit."""
    last = fwd.w.n_layers - 1
    f_pre = edits.get(f"blocks.{last}.mlp.hook_pre")
    f_post = edits.get(f"blocks.{last}.mlp.hook_post")
    new_post = F.gelu(f_pre(pre)) if f_pre is not None else post
    if f_post is not None:
        new_post = f_post(new_post)
    delta = new_post - post
    idx = torch.nonzero(delta.abs().amax(dim=(0, 1)) > 0).flatten().tolist()
    return idx, delta[..., idx]


def shortcut_losses(fwd: Forward, resid: Float[Tensor, "batch pos d_model"], tokens: Tensor,
                    lengths: Tensor, deltas: Sequence[tuple[list[int], Tensor]],
                    chunk_rows: int = LOSS_CHUNK_ROWS) -> tuple[Tensor, list[Tensor]]:
    """Per-token losses of the unedited model and of last-layer MLP edits, from one
    unembedding of the cached final residual stream.

    With LayerNorm folded, the logits are `(r_c / s) W_U + b_U` (r_c: centred residual,
    s: its RMS scale). An edit that adds `δ = Δpost @ W_out[last, idx]` to the final residual
    gives `logits' = (s/s')·(logits − b_U) + (Δpost @ (W_out[last, idx] W_U) − mean(δ)·1ᵀW_U)/s' + b_U`
    with `s'` the recomputed scale of `r_c + δ − mean(δ)`: a rank-k update, exact up to
    float rounding (tested against the full pass in tests/test_engine.py). In bfloat16 the
    matmuls here (`δ`, `W_out W_U`, the unembedding) are rounded as the full pass's are
    (`Forward.matmul`); the rest, the log-sum-exp included, is float32.

    Returns:
        (original `[batch, pos-1]`, [edited `[batch, pos-1]` per delta]) losses in nats,
        0 where there is no target.
    """
    w = fwd.w
    last = w.n_layers - 1
    b, n, _ = resid.shape
    valid = torch.arange(n - 1, device=resid.device)[None, :] < (lengths[:, None] - 1)
    rows = resid[:, :-1][valid]
    targets = tokens[:, 1:][valid]
    rc = rows - rows.mean(-1, keepdim=True)
    scale = (rc.pow(2).mean(-1, keepdim=True) + w.eps).sqrt()
    # 1ᵀ W_U, [d_vocab]: a statistic, so float32 (without copying a bf16 W_U)
    colsum = w.W_U.sum(0) if fwd.mode == "float32" else w.W_U.sum(0, dtype=torch.float32)
    b_U = w.b_U.float()  # the edited logits' addmm mixes it with float32 operands
    prepared = []
    for idx, d in deltas:
        a = d[:, :-1][valid]  # [rows, k]
        wo = w.W_out[last, idx]  # [k, d_model]
        delta = fwd.matmul(a, wo)
        m = delta.mean(-1, keepdim=True)
        rc2 = rc + delta - m
        scale2 = (rc2.pow(2).mean(-1, keepdim=True) + w.eps).sqrt()
        basis = torch.cat([fwd.product(wo @ w.W_U), colsum[None]], 0)  # [k+1, d_vocab]
        coef = torch.cat([a, -m], -1) / scale2  # [rows, k+1]
        prepared.append((scale / scale2, coef, basis))
    base = torch.empty(rows.shape[0], device=resid.device, dtype=torch.float32)
    edited = [torch.empty_like(base) for _ in deltas]
    for s0 in range(0, rows.shape[0], chunk_rows):
        sl = slice(s0, s0 + chunk_rows)
        z = fwd.matmul(rc[sl] / scale[sl], w.W_U)  # logits − b_U
        tgt = targets[sl, None]
        lg = z + b_U
        base[sl] = torch.logsumexp(lg, -1) - lg.gather(-1, tgt)[:, 0]
        for k, (ratio, coef, basis) in enumerate(prepared):
            x = torch.addmm(b_U, coef[sl], basis).addcmul_(z, ratio[sl])
            edited[k][sl] = torch.logsumexp(x, -1) - x.gather(-1, tgt)[:, 0]
    fwd.unembedded_rows += rows.shape[0]

    def place(v):
        t = torch.zeros(b, n - 1, device=resid.device, dtype=torch.float32)
        t[valid] = v
        return t

    return place(base), [place(e) for e in edited]


def per_example_losses(
    fwd: Forward,
    batches: Sequence[Batch],
    variants: Mapping[str, Edits],
    desc: str = "losses",
    show_progress: bool = True,
    shortcut: bool = True,
) -> dict[str, np.ndarray]:
    """Mean next-token loss (nats) of every example under the unedited model (`"original"`)
    and each variant, in the caller's example order.

    The unedited pass runs once per batch. A variant that edits only last-layer MLP neurons
    is computed from that pass's final residual stream by the rank-k logit update of
    `shortcut_losses` (no forward pass at all); any other variant restarts from the cached
    `hook_resid_pre` of the first layer it edits. Seed: `haystack_utils.get_ablated_performance`
    (per example `model(tokens, return_type="loss")`, with and without the hooks).

    Returns:
        {"original": [n_examples], name: [n_examples], ...}
    """
    n = sum(len(b.index) for b in batches)
    out = {k: np.zeros(n, dtype=np.float64) for k in ["original", *variants]}
    last = fwd.w.n_layers - 1
    fast = [k for k, e in variants.items() if shortcut and is_final_mlp_edit(e, fwd.w.n_layers)]
    slow = [k for k in variants if k not in fast]
    starts = {name: earliest_layer(variants[name]) for name in slow}
    needed = sorted(set(starts.values()))
    with torch.inference_mode():
        for batch in progress(batches, desc, show_progress):
            capture = {f"blocks.{layer}.hook_resid_pre": None for layer in needed}
            if fast:
                capture.update({f"blocks.{last}.mlp.hook_pre": None, f"blocks.{last}.mlp.hook_post": None})
            resid = fwd.run(batch.tokens, capture=capture)
            denom = (batch.lengths - 1).clamp(min=1).to(resid.dtype)
            deltas = [_final_mlp_delta(fwd, variants[k], capture[f"blocks.{last}.mlp.hook_pre"],
                                       capture[f"blocks.{last}.mlp.hook_post"]) for k in fast]
            base_tok, fast_tok = shortcut_losses(fwd, resid, batch.tokens, batch.lengths, deltas)
            out["original"][batch.index] = (base_tok.sum(1) / denom).double().cpu().numpy()
            for name, tok in zip(fast, fast_tok, strict=True):
                out[name][batch.index] = (tok.sum(1) / denom).double().cpu().numpy()
            for name in slow:
                start = starts[name]
                r = fwd.run(resid=capture[f"blocks.{start}.hook_resid_pre"], start_layer=start,
                            edits=variants[name])
                loss = fwd.token_losses(r, batch.tokens, batch.lengths).sum(1) / denom
                out[name][batch.index] = loss.double().cpu().numpy()
    return out
