"""probelab's training stack: one config system, run-folder rules, checkpoints, LR schedule and metric
logs shared by two loops that read top to bottom, :mod:`probelab.train.csft` (continual SFT: full,
partial, stack, hybrid, Control LLM) and :mod:`probelab.train.cocomix` (CoCoMix and its NTP baseline).
``probelab train --config X`` runs the recipe that the config's ``run.recipe`` names."""
from .config import CoCoMixTrainConfig, TrainConfig, load_config
from .methods import METHODS, apply_method

__all__ = ["TrainConfig", "CoCoMixTrainConfig", "load_config", "METHODS", "apply_method"]
