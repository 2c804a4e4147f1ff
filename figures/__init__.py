"""Matplotlib figures of the report. Each function takes arrays/tables from an artifact
and returns a Figure; `save` writes PNG + SVG + a JSON sidecar naming the producing
function and artifact (so every figure is traceable)."""

from .plots import ablation_bar, activation_histogram, save

__all__ = ["ablation_bar", "activation_histogram", "save"]
