"""``python -m probelab.train --config X`` (also ``accelerate launch -m probelab.train ...``): run the
recipe the config names in ``run.recipe`` (csft, the default, or cocomix)."""
import sys

from .run import dispatch, entry

sys.exit(entry(dispatch))
