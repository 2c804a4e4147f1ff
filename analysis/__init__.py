"""Analyses of the German context neuron (seed notebook `shared/seed/`), as pure functions
over a model, tokens and parameters, plus the cached pipeline that writes artifacts."""

__version__ = "0.1.0"
