"""The machinery the analyses stand on: configuration, data, model loading, the batched
hooked forward (`engine`), numerical precision, statistics, content-addressed artifacts
and their code hashes, and the step runner.

Nothing here knows what an analysis means, nor imports the analyses (`analysis.families`),
the controls (`analysis.controls`) or the orchestration that runs them
(`analysis.orchestration`: the pipeline, whose `STEPS` names the families, the sweep, the
regression check, the benchmark and the command line).
"""
