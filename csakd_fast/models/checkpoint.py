"""Checkpoints: our own format and the public implementation's bare state dicts.

Own format (``save_checkpoint``): ``{"format": "csakd_fast", "format_version": 1,
"config": CSAKDConfig.to_dict(), "model": state_dict, **extra}``. Public checkpoints are bare
state dicts of ``Teacher``/``Student`` (keys ``decoder.…``), possibly saved from a
``torch.compile``-d (``_orig_mod.``) or DataParallel (``module.``) model.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch

from .. import _io
from .config import CSAKDConfig
from .csakd import STREAMS, CSAKDNet

FORMAT = "csakd_fast"
FORMAT_VERSION = 1
_WRAPPERS = ("_orig_mod.", "module.")


def save_checkpoint(path, model: CSAKDNet, **extra) -> None:
    """Write ``model`` (its config and weights) and any ``extra`` entries atomically."""
    if not isinstance(model, CSAKDNet):
        raise ValueError(f"model: expected a CSAKDNet, got {type(model).__name__}")
    obj = {"format": FORMAT, "format_version": FORMAT_VERSION,
           "config": model.config.to_dict(), "model": model.state_dict(), **extra}
    _io.atomic_torch_save(obj, path)


def strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Remove ``_orig_mod.`` / ``module.`` wrappers (in any nesting) and add the ``decoder.``
    level when a bare FNN_Teacher/FNN_Student state dict was saved."""
    out = {}
    for k, v in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in _WRAPPERS:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    if out and not any(k.startswith("decoder.") for k in out) and "hconv1.weight" in out:
        out = {"decoder." + k: v for k, v in out.items()}
    return out


def _find_state_dict(obj, source: str) -> dict:
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in ("model", "state_dict", "model_state_dict", "net"):
            if key in obj and isinstance(obj[key], Mapping):
                return _find_state_dict(obj[key], source)
    raise ValueError(f"path: {source} holds no state dict (expected a mapping of parameter "
                     f"names to tensors, or one under 'model' / 'state_dict')")


def config_from_state_dict(sd: Mapping[str, torch.Tensor], **overrides) -> CSAKDConfig:
    """Read the architecture of a public-layout state dict off its shapes.

    What shapes cannot tell takes the public code's values unless overridden: scale 4, 4 heads,
    ``attention="legacy"`` (the public apply step, docs/design.md "The network", so its outputs are reproduced).
    The public student class (HSI-stream convs grouped by nf // 2) never calls its hm blocks."""
    def shape(key):
        if key not in sd:
            raise ValueError(f"state_dict: missing {key!r}; not a CSAKD checkpoint in the public layout")
        return tuple(sd[key].shape)

    bands, nf = shape("decoder.last.weight")[0], shape("decoder.hconv1.weight")[0]
    msi_bands = shape("decoder.mconv1.weight")[1]
    layers, groups, gc = [], {}, None
    for s in STREAMS:
        idx = {int(m.group(1)) for k in sd for m in [re.match(rf"decoder\.{s}feat\.(\d+)\.", k)] if m}
        layers.append(len(idx))
        if idx:
            w = shape(f"decoder.{s}feat.0.MFB1.conv1.weight")
            gc = w[0]
            groups[s] = nf // w[1]
    keys = {k[len("decoder.fuse_att."):].split(".")[0] for k in sd if k.startswith("decoder.fuse_att.")}
    if not keys:
        fusion = "sum"
    elif "weights" in keys:
        fusion = "sigmoid"
    elif "attention_conv" in keys:
        fusion = "concat"
    elif "attention_weights" in keys:
        fusion = "csa"
    else:
        fusion = "mhca"
    cfg = dict(bands=bands, msi_bands=msi_bands, nf=nf, layers=tuple(layers), fusion=fusion,
               head_groups=nf // shape("decoder.fuse.weight")[1],
               **{f"{s}_groups": g for s, g in groups.items()})
    if gc is not None:
        cfg["gc"] = gc
    cfg["attention"] = "normalized" if "temperature" in keys else "legacy"
    if fusion in ("mhca", "csa"):
        cfg["attn_dim"] = shape("decoder.fuse_att.query_conv.weight")[0]
    h_groups = groups.get("h", 1)
    cfg["use_hm_blocks"] = not (h_groups > 1 and h_groups == nf // 2)
    cfg.update(overrides)
    return CSAKDConfig(**cfg)


def load_checkpoint(path, *, backend: str = "auto", map_location="cpu", config: CSAKDConfig | None = None,
                    strict: bool = True, **overrides) -> CSAKDNet:
    """Build a CSAKDNet from a checkpoint file: our own format, or a public-layout state dict.

    ``config`` replaces the stored / inferred architecture; ``overrides`` change single fields
    (e.g. ``scale=8`` or ``attention="paper"`` for a public checkpoint)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"path: no checkpoint file at {str(p)!r}")
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"path: {str(p)!r} is not a readable torch checkpoint ({e})") from e
    if config is not None and overrides:
        config = config.replace(**overrides)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        sd = strip_prefixes(obj["model"])
        if config is None:
            config = CSAKDConfig.from_dict({**obj["config"], **overrides})
    else:
        sd = strip_prefixes(_find_state_dict(obj, repr(str(p))))
        if config is None:
            config = config_from_state_dict(sd, **overrides)
    model = CSAKDNet(config, backend=backend)
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"path: {str(p)!r} does not match the architecture {config}: {e}") from e
    if strict and (missing or unexpected):
        raise ValueError(f"path: {str(p)!r} does not match the architecture {config}: "
                         f"missing keys {sorted(missing)[:8]}, unexpected keys {sorted(unexpected)[:8]}")
    return model
