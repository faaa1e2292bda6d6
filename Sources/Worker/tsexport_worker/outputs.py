"""Model outputs as a flat, ordered list of named tensors, the same way for eager and traced modules, and the CPU
copies the bundle saves of them."""

from __future__ import annotations

from typing import Any

import torch


def flatten(output: Any, name: str | None = None) -> list[tuple[str, torch.Tensor]]:
    """Tensors of a (nested) output in order: ModelOutput/dict keys, tuple/list positions; None entries skipped.

    A ModelOutput flattens to the same order as its `to_tuple()`, so eager names line up with traced positions.
    """
    if isinstance(output, torch.Tensor):
        return [(name or "output_0", output)]
    if output is None:
        return []
    flat: list[tuple[str, torch.Tensor]] = []
    if isinstance(output, dict):
        for key, value in output.items():
            flat += flatten(value, f"{name}.{key}" if name else str(key))
        return flat
    if isinstance(output, (tuple, list)):
        for i, value in enumerate(output):
            flat += flatten(value, f"{name}.{i}" if name else f"output_{i}")
        return flat
    raise TypeError(f"an output of type {type(output).__name__} is not a tensor, tuple, list or dict")


def signature(named: list[tuple[str, torch.Tensor]]) -> list[dict[str, Any]]:
    return [{"name": n, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)} for n, t in named]


def cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A detached, contiguous CPU copy that owns its storage (safe to save beside other tensors)."""
    return tensor.detach().to("cpu").contiguous().clone()
