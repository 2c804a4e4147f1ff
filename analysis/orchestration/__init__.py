"""The orchestration, above the analyses: the command line (`cli`), the report run
(`pipeline`: `STEPS` names the families and the controls' `planted` check and wires them
into the DAG), the training-dynamics sweep (`sweep`: the driver's parts, and `sweep.task`,
what a worker runs), the regression check against the committed baselines (`regression`)
and the benchmark (`bench`).

It stands on `analysis.families` and `analysis.controls`, which stand on the machinery
(`analysis.core`); nothing below imports this package.
"""
