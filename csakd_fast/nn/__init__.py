"""Drop-in layers built on the fused ops (api.md)."""
from .csa import CrossSelfAttention
from .clra import CLRABlock, DenseBlock

__all__ = ["CrossSelfAttention", "CLRABlock", "DenseBlock"]
