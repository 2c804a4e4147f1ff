"""Controls: models this project builds itself, whose answers are known (the `organism`
trained here on Europarl; `pythia-70m-planted`, random weights with one neuron planted to
detect German, `planted`).

They are inputs to the pipeline like any checkpoint: `sources` registers them with the
machinery's model loader (`core.models.load_model`), which stands below them. The analyses
that read one are `families.dynamics`, which takes the organism's checkpoint series from
its manifest, and the `planted` step (`planted_check`), which checks the report's artifacts
against the planted neuron.
"""
