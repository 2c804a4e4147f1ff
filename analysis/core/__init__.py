"""The machinery that runs the analyses: configuration, data, model loading, the batched
hooked forward (`engine`), content-addressed artifacts and their cache, the step runner and
pipeline, regression checks, the benchmark and the command line.

Nothing here knows what an analysis means; `pipeline.STEPS` is the one place that names
the families (`analysis.families`) and wires them into the DAG.
"""
