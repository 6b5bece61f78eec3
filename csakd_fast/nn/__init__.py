"""Drop-in layers (torch.nn.Module) built on the fused ops: CrossSelfAttention, CLRABlock."""
from .csa import CrossSelfAttention
from .clra import CLRABlock, DenseBlock

__all__ = ["CrossSelfAttention", "CLRABlock", "DenseBlock"]
