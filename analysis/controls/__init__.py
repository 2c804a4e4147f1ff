"""Controls: models and tokenizers this project builds itself, whose answers are known
(the hermetic `tiny` tokenizer; the `organism` trained here on Europarl).

They are inputs to the pipeline like any checkpoint; the only analysis that reads one is
`families.dynamics`, which takes the organism's checkpoint series from its manifest.
"""
