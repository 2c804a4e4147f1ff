"""The analysis families: one module per section family of the seed notebook, plus neuron
discovery and training dynamics.

Each module holds pure functions (model, tokens, parameters -> tensors or tables), its
pipeline step (`run_step(run, arts)`, cached by `analysis.core.runner`) and its figures.
Families depend on `analysis.core` (engine, config, runner) and never on each other's
steps, only on their pure functions.
"""
