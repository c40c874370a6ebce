"""Continual SFT entry point: the loop is probelab.train.csft (``probelab train`` runs it too).

    python training/train_csft.py --config training/configs/cpu-smoke.yaml
    accelerate launch training/train_csft.py --config cpu-smoke
"""
import sys

from probelab.train.csft import main
from probelab.train.run import entry

if __name__ == "__main__":
    sys.exit(entry(main))
