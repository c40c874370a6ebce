"""Pieces of the continual-SFT training recipe (``training/train_csft.py`` reads top to bottom
and uses them): config files, the method registry, deterministic batches, checkpoints, curves."""
from .config import TrainConfig, load_config
from .methods import METHODS, apply_method

__all__ = ["TrainConfig", "load_config", "METHODS", "apply_method"]
