"""The controls as models that `core.models.load_model` knows: importing this module
registers them with the machinery, which stands below the controls and imports none of them.

* `pythia-70m-planted`: random weights with one neuron planted to detect German
  (`planted.load_planted`);
* `organism`: the final checkpoint of the latest organism run (`organism.load_final`);
* the organism's checkpoint folders, recognised by their training record
  (`organism.checkpoint_info`): loaded with their own tokenizer, named `organism` or
  `organism-step<N>` (`organism.slug`), the record in `info["organism"]`.

The orchestration imports it (`analysis.orchestration.pipeline`, `bench`, `cli`); so must
any other caller that loads a control by name.
"""

from __future__ import annotations

from ..core.models import CheckpointKind, register_checkpoint_kind, register_source
from . import organism, planted

register_source(planted.PLANTED_MODEL, planted.load_planted)
register_source("organism", organism.load_final)
register_checkpoint_kind(CheckpointKind("organism", organism.checkpoint_info, organism.slug))
