"""Bytes kept for backward: unique storages saved by autograd, on any device.

:class:`SavedBytes` counts the storages that autograd saves inside a ``with`` block through
``torch.autograd.graph.saved_tensors_hooks``, each storage once: a tensor saved by several nodes,
or a view of a saved tensor, adds nothing; a saved view keeps (and counts) its whole storage.
Tensors an ``autograd.Function`` stashes on ``ctx`` without ``save_for_backward`` are not seen.
Storages are keyed by their data pointer (by the storage object on the meta device, where every
pointer is 0), so the count works for meta-device models too, without allocating anything.
The benchmarks and the tests measure memory with it (docs/design.md, "Measuring").
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterable, Tuple

import torch

__all__ = ["SavedBytes", "saved_bytes"]


def storage_key(t: torch.Tensor) -> int:
    """One key per live storage: its data pointer, or (meta device) the storage's identity."""
    st = t.untyped_storage()
    return st._cdata if t.device.type == "meta" else st.data_ptr()


class SavedBytes:
    """Counts the unique storages autograd saves for backward inside ``with counter:``.

    ``exclude``: tensors (parameters, the inputs) whose storages are reported apart, so that
    :attr:`activations` is what the computation adds. Several ``with`` blocks accumulate into
    the same count; use one counter per forward whose graph is alive at once."""

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self.storages: Dict[int, int] = {}
        self.opaque = 0  # saved tensors without a storage (e.g. tensor subclasses)
        self.saved_tensors = 0
        self._exclude = set()
        for t in exclude:
            with contextlib.suppress(Exception):
                self._exclude.add(storage_key(t))
        self._ctx = None

    def _pack(self, t: torch.Tensor):
        self.saved_tensors += 1
        try:
            key, nbytes = storage_key(t), t.untyped_storage().nbytes()
        except Exception:  # noqa: BLE001 - e.g. a wrapper subclass without storage
            self.opaque += 1
            return t
        self.storages[key] = max(nbytes, self.storages.get(key, 0))
        return t

    @staticmethod
    def _unpack(t):
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        ctx, self._ctx = self._ctx, None
        return ctx.__exit__(*exc)

    @property
    def total(self) -> int:
        """Bytes of every unique storage saved (excluded ones included)."""
        return sum(self.storages.values())

    @property
    def activations(self) -> int:
        """Bytes of the saved storages that are not among ``exclude``."""
        return sum(n for k, n in self.storages.items() if k not in self._exclude)

    def summary(self) -> dict:
        return {"saved_bytes": self.total, "saved_bytes_activations": self.activations,
                "saved_storages": len(self.storages), "saved_tensors": self.saved_tensors,
                "saved_opaque": self.opaque}


def saved_bytes(fn: Callable, exclude: Iterable[torch.Tensor] = ()) -> Tuple[int, object]:
    """(bytes of the unique storages saved for backward by ``fn()``, those of ``exclude`` left
    out; ``fn()``'s result, whose graph holds them)."""
    with SavedBytes(exclude) as counter:
        out = fn()
    return counter.activations, out
