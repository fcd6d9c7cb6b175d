"""Plain step-by-step torch implementations of SPEC §1: the oracle of every test and the CPU
fallback of last resort. Obviously correct, not fast."""
from .cells import CORES, DYNAMICS, HYPER_NAMES, STATE_NAMES, cell_step, core_step, drive_step, recurrent_layer, recurrent_network
from .scans import adam_scan, momentum_scan, sqrt0

__all__ = ["momentum_scan", "adam_scan", "sqrt0", "recurrent_layer", "recurrent_network", "cell_step", "drive_step", "core_step",
           "CORES", "DYNAMICS", "STATE_NAMES", "HYPER_NAMES"]
