"""Numeric precision of a run: `--dtype float32|bfloat16` and `--tf32 on|off`.

float32 is the reference path and the default: the bridge loads and processes the weights
in float32 (`models._boot`), the engine runs every operation in float32, TF32 is off. The
committed baselines are float32 numbers.

bfloat16 keeps that reference path for loading (so LayerNorm folding and centring are done
in float32, on the same numbers) and only then casts the engine's `Weights` to bfloat16
(`engine.Weights.to_precision`). The forward pass (`engine.Forward`) hands every matmul (QKV,
attention scores, pattern @ V, W_O, W_in, W_out, the unembedding) bfloat16 operands and
rounds its product to bfloat16, as a bfloat16 GEMM does (fp32 accumulation, bf16 output);
everything else stays float32: the residual stream, LayerNorm, rotary, softmax, GELU, the
log-sum-exp of the logits, the losses and every statistic. So the tensors the analyses read
(activations, residuals, losses) are float32 holding bf16-rounded products.

How the bf16 GEMM runs depends on the device (`matmul_mode`):

* `native` (CUDA): the weights are stored as bfloat16 tensors and torch's bf16 GEMM runs.
* `emulated` (CPU): the weights are stored as float32 tensors holding bf16-representable
  values; operands are rounded to bf16 before a float32 GEMM and the product is rounded to
  bf16 after it. The rounding points are those of a bf16 GEMM with fp32 accumulation; only
  the order of the fp32 additions differs. Why: CPUs without AVX512-BF16/AMX run torch's bf16
  GEMM 30-90x slower than fp32 (measured here: a 512 x 512 x 50,304 unembedding 14 s vs
  0.5 s), which would make a bf16 report on CPU take hours. `tests/test_dtype.py` checks the
  emulation against the native bf16 GEMM on `tiny`.

TF32 (`--tf32 on`): `torch.backends.cuda.matmul.allow_tf32` and `torch.backends.cudnn.
allow_tf32`, set for the run's duration (`matmul_precision`) and restored after. It changes
numbers only for float32 matmuls on CUDA; on CPU, and for bfloat16 (whose matmuls are not
float32), it has no effect, and the provenance says so (`tf32_effective`, `precision_note`)
rather than pretending. Off by default, so float32 on CUDA stays IEEE float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .errors import UsageError

REFERENCE_DTYPE = "float32"
DTYPES = ("float32", "bfloat16")
TF32_CHOICES = {"on": True, "off": False}


def parse_dtype(text: str) -> str:
    """The compute dtype named by `--dtype` (`float32` or `bfloat16`; case and spaces ignored).

    Raises:
        UsageError: anything else (float16 included: its 5-bit exponent overflows on
            Pythia's residual norms and logits, and nothing here scales losses).
    """
    name = str(text).strip().lower()
    if name not in DTYPES:
        why = " (float16 is not supported: its range overflows; use bfloat16)" if name in (
            "float16", "fp16", "half") else ""
        raise UsageError(f"unknown --dtype {text!r}; choose float32 or bfloat16{why}")
    return name


def parse_tf32(text: str | bool) -> bool:
    """`--tf32 on|off` as a bool (a bool passes through).

    Raises:
        UsageError: anything but on/off.
    """
    if isinstance(text, bool):
        return text
    value = TF32_CHOICES.get(str(text).strip().lower())
    if value is None:
        raise UsageError(f"unknown --tf32 {text!r}; choose on or off")
    return value


def out_suffix(dtype: str, tf32: bool) -> str:
    """What a run's precision adds to its default output folder's name: `""` for the
    float32 reference, `-bfloat16`, `-tf32` or `-bfloat16-tf32` otherwise (as requested, not
    as effective: TF32 on a CPU changes no number but every cache key, so its artifacts
    would still replace float32's in a shared folder).

    Raises:
        UsageError: a dtype `parse_dtype` refuses, or a `tf32` `parse_tf32` refuses.
    """
    dtype, tf32 = parse_dtype(dtype), parse_tf32(tf32)
    return ("" if dtype == REFERENCE_DTYPE else f"-{dtype}") + ("-tf32" if tf32 else "")


def describe(dtype: str, tf32: bool) -> str:
    """`float32`, `bfloat16`, `float32 + TF32`, ...: a run's requested precision in words."""
    return parse_dtype(dtype) + (" + TF32" if parse_tf32(tf32) else "")


def torch_dtype(name: str):
    """`torch.float32` / `torch.bfloat16` for a name `parse_dtype` accepts."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[parse_dtype(name)]


def is_cuda(device: str) -> bool:
    """Whether a `--device` value names a CUDA device (`cuda`, `cuda:1`)."""
    return str(device).startswith("cuda")


def matmul_mode(dtype: str, device: str) -> str:
    """How the forward's matmuls run: `float32`, or for bfloat16 `native` (CUDA: bf16
    tensors and GEMMs) or `emulated` (CPU: bf16 rounding around float32 GEMMs; see the
    module docstring)."""
    if parse_dtype(dtype) == REFERENCE_DTYPE:
        return "float32"
    return "native" if is_cuda(device) else "emulated"


def tf32_effective(dtype: str, tf32: bool, device: str) -> bool:
    """Whether `--tf32 on` changes any number: only float32 matmuls on CUDA."""
    return bool(tf32) and parse_dtype(dtype) == REFERENCE_DTYPE and is_cuda(device)


def precision_note(dtype: str, tf32: bool, device: str) -> str:
    """One sentence for the provenance and the report's Setup section."""
    dtype = parse_dtype(dtype)
    if dtype == REFERENCE_DTYPE:
        base = "float32 throughout (the reference path)"
    else:
        how = ("bf16 tensors and GEMMs" if is_cuda(device) else
               "emulated on CPU: operands and products rounded to bf16 around float32 GEMMs")
        base = (f"weights loaded and processed in float32, then cast to bfloat16; matmuls in "
                f"bfloat16 ({how}); residual stream, LayerNorm, softmax, GELU, log-sum-exp, "
                "losses and statistics in float32")
    if not tf32:
        return base + "; TF32 off"
    if tf32_effective(dtype, tf32, device):
        return base + "; TF32 on: float32 matmuls on CUDA round their operands to TF32 (10-bit mantissa)"
    where = "on CPU" if not is_cuda(device) else "for bfloat16 matmuls"
    return base + f"; TF32 requested but without effect {where}"


def record(dtype: str, tf32: bool, device: str) -> dict:
    """What the run's precision adds to the model's provenance (`LoadedModel.info`, so to
    every step's cache key): `dtype` (of the forward's matmuls), `load_dtype` (always
    float32), `matmul` (`matmul_mode`), `tf32` (as requested), `tf32_effective`,
    `precision_note`.

    Raises:
        UsageError: a dtype `parse_dtype` refuses.
    """
    dtype = parse_dtype(dtype)
    return {"dtype": dtype, "load_dtype": REFERENCE_DTYPE, "matmul": matmul_mode(dtype, device),
            "tf32": bool(tf32), "tf32_effective": tf32_effective(dtype, tf32, device),
            "precision_note": precision_note(dtype, tf32, device)}


@contextlib.contextmanager
def matmul_precision(tf32: bool) -> Iterator[None]:
    """TF32 for CUDA float32 matmuls and cuDNN set to `tf32` inside the block (both off
    when False, whatever torch's defaults), restored after. A no-op for numbers on CPU."""
    import torch

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
