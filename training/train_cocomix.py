"""CoCoMix / NTP entry point: the loop is probelab.train.cocomix (``probelab train`` runs it too).

    python training/train_cocomix.py --config training/configs/cocomix_cpu.yaml --mode ntp
    accelerate launch --config_file training/configs/accelerate_fsdp.yaml training/train_cocomix.py --config cocomix_69m
"""
import sys

from probelab.train.cocomix import main
from probelab.train.run import entry

if __name__ == "__main__":
    sys.exit(entry(main))
