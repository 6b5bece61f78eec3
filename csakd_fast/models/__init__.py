"""CSAKD teacher and student networks, their configuration and checkpoints."""
from .checkpoint import config_from_state_dict, load_checkpoint, save_checkpoint
from .config import ATTENTIONS, FUSIONS, CSAKDConfig
from .csakd import CSAKDNet

__all__ = ["CSAKDConfig", "CSAKDNet", "load_checkpoint", "save_checkpoint",
           "config_from_state_dict", "FUSIONS", "ATTENTIONS"]
