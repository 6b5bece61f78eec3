"""Inference with a trained model: fusing new LR-HSI / HR-MSI pairs (``csakd-fast fuse``).

Modules: ``fuse`` (whole-image fusion of arrays and of files, the normalisation at inference).
"""
from .fuse import default_output, fuse, fuse_files

__all__ = ["fuse", "fuse_files", "default_output"]
