"""Argument validation shared by every public entry point.

Every check raises ``ValueError`` naming the argument, what was expected and what was received;
nothing is broadcast, truncated or silently converted.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch


def _shape(x: torch.Tensor) -> str:
    return "(" + ", ".join(str(d) for d in x.shape) + ")"


def tensor(name: str, x, ndim: int | None = None, *, floating: bool = True) -> torch.Tensor:
    """``x`` must be a tensor (of rank ``ndim`` and a floating dtype when asked)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor, got shape {_shape(x)} ({x.dim()}-D)")
    if floating and not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    return x


def channels(name: str, x: torch.Tensor, expected: int, what: str = "channels") -> None:
    if x.shape[1] != expected:
        raise ValueError(f"{name}: expected {expected} {what} (dim 1), got shape {_shape(x)}")


def same_shape(names: Sequence[str], xs: Sequence[torch.Tensor]) -> None:
    ref = xs[0]
    for n, x in zip(names[1:], xs[1:]):
        if x.shape != ref.shape:
            raise ValueError(f"{n}: expected shape {_shape(ref)} (the shape of {names[0]}), got {_shape(x)}")


def same_device_dtype(names: Sequence[str], xs: Sequence[torch.Tensor]) -> None:
    ref = xs[0]
    for n, x in zip(names[1:], xs[1:]):
        if x.device != ref.device:
            raise ValueError(f"{n}: expected device {ref.device} (the device of {names[0]}), got {x.device}")
        if x.dtype != ref.dtype:
            raise ValueError(f"{n}: expected dtype {ref.dtype} (the dtype of {names[0]}), got {x.dtype}")


def finite(name: str, x: torch.Tensor) -> None:
    """Refuse NaN/Inf. Skipped while ``torch.compile`` traces (a data-dependent branch would
    break the graph); eager calls, the ones that feed training, are always checked."""
    if torch.compiler.is_compiling():
        return
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name}: expected finite values, got {bad} NaN/Inf entries in shape {_shape(x)}")


def positive_int(name: str, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {v!r}")
    return v


def choice(name: str, v, options: Iterable[str]) -> str:
    options = tuple(options)
    if v not in options:
        raise ValueError(f"{name}: expected one of {', '.join(repr(o) for o in options)}, got {v!r}")
    return v


def known_fields(name: str, d, cls, what: str = "fields") -> dict:
    """``d`` must be a dict whose keys are fields of the dataclass ``cls``."""
    import dataclasses

    if not isinstance(d, dict):
        raise ValueError(f"{name}: expected a dict, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{name}: unknown {what} {unknown}; known: {sorted(known)}")
    return d


def like_parameters(name: str, x: torch.Tensor, module: torch.nn.Module) -> None:
    """``x`` must live on the device and have the dtype of ``module``'s parameters."""
    p = next(module.parameters(), None)
    if p is None:
        return
    if x.device != p.device:
        raise ValueError(f"{name}: expected device {p.device} (the module's parameters), got {x.device}")
    if x.dtype != p.dtype:
        raise ValueError(f"{name}: expected dtype {p.dtype} (the module's parameters), got {x.dtype}")


def buffer(name: str, t, shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A tensor handed to native code by pointer: on ``device``, of ``dtype`` and ``shape``,
    contiguous (anything else would be read or written out of bounds)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.device != device:
        raise ValueError(f"{name}: expected device {device}, got {t.device}")
    if t.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype}, got {t.dtype}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor, got strides {t.stride()}")
    return t


def divisible(name: str, x: torch.Tensor, factor: int) -> None:
    """The height and width of ``x`` (…, H, W) must be multiples of ``factor`` ≥ 1."""
    H, W = x.shape[-2:]
    if factor < 1 or H % factor or W % factor:
        raise ValueError(f"{name}: expected a height and width divisible by the factor {factor}, "
                         f"got shape {_shape(x)}")


def planes(name: str, t: torch.Tensor) -> torch.Tensor:
    """``t`` (…, H, W) must have contiguous H×W planes (strides (…, W, 1)); its other strides
    are free (a channel slice of a larger buffer)."""
    if t.stride(-1) != 1 or t.stride(-2) != t.shape[-1]:
        raise ValueError(f"{name}: expected contiguous H×W planes (strides (…, {t.shape[-1]}, 1)), "
                         f"got strides {tuple(t.stride())}")
    return t
