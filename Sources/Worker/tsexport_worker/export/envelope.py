"""The serving envelope as the Swift side planned it: which axis governs each dimension of each input, the points to
make inputs at, and the guard that makes model.pt refuse shapes outside the verified ranges.

The worker decides nothing here: a size given as null means "the traced size" (only tracing knows the length of a
text tensor without pad_to), and everything else is used as given.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from typing import Any

import torch

from ..bundle import MODEL_FILE, RECORD_NAME
from ..errors import WorkerError, describe, traceback_tail
from ..torchjit import load as jit_load
from . import inputs
from .guard import GuardInput, read_envelope, wrap


@dataclass(frozen=True)
class Point:
    case: str
    sizes: dict[str, int | None]


@dataclass(frozen=True)
class Envelope:
    """`job.trace.envelope`: axes (name, min, max or None for the traced size), per tensor the axis of each
    dimension, the points, and whether masks get padding at points."""

    axes: list[tuple[str, int, int | None]]
    tensor_axes: dict[str, list[str | None]]
    points: list[Point]
    pad_masks: bool

    @staticmethod
    def parse(data: dict[str, Any] | None) -> Envelope | None:
        if data is None:
            return None
        try:
            axes = [(str(a["name"]), int(a["min"]), None if a["max"] is None else int(a["max"])) for a in data["axes"]]
            tensors = {str(t["name"]): [None if x is None else str(x) for x in t["axes"]] for t in data["tensors"]}
            points = [
                Point(str(p["case"]), {str(k): None if v is None else int(v) for k, v in p["sizes"].items()})
                for p in data["points"]
            ]
            return Envelope(axes, tensors, points, bool(data["pad_masks"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise WorkerError(
                None, "bad_request", f"`spec.trace.envelope` is malformed: {describe(exc)}", field="spec.trace.envelope"
            ) from exc

    def traced_sizes(self, built: inputs.BuiltInputs) -> dict[str, int]:
        """Each axis' size at the traced shape (from the first tensor that has it)."""
        out: dict[str, int] = {}
        for name, tensor in zip(built.names, built.tensors, strict=True):
            for dim, axis in enumerate(self.tensor_axes.get(name, [])):
                if axis is not None and axis not in out and dim < tensor.dim():
                    out[axis] = int(tensor.shape[dim])
        return out

    def resolve(self, point: Point, traced: dict[str, int]) -> dict[str, int]:
        return {
            axis: (size if size is not None else traced[axis]) for axis, size in point.sizes.items() if axis in traced
        }

    def ranges(self, traced: dict[str, int]) -> dict[str, tuple[int, int]]:
        return {name: (lo, hi if hi is not None else traced.get(name, lo)) for name, lo, hi in self.axes}


def shape_at(envelope: Envelope, name: str, tensor: torch.Tensor, sizes: dict[str, int]) -> list[int]:
    shape = list(tensor.shape)
    for dim, axis in enumerate(envelope.tensor_axes.get(name, [])):
        if axis is not None and dim < len(shape) and axis in sizes:
            shape[dim] = sizes[axis]
    return shape


def pad_mask(mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Right padding: each row keeps a seeded number of leading ones (at least one), the rest zeros."""
    if mask.dim() < 2 or mask.shape[1] < 2:
        return mask
    out = torch.zeros_like(mask)
    length = mask.shape[1]
    for row in range(mask.shape[0]):
        keep = int(torch.randint(1, length + 1, (1,), generator=generator).item())
        out[row, :keep] = 1
    return out


def inputs_at(
    envelope: Envelope, built: inputs.BuiltInputs, sizes: dict[str, int], seed: int, vocab_size: int | None
) -> list[torch.Tensor]:
    """The inputs at one point: every tensor remade at its new shape as check shapes are (random/zeros/ones as
    declared, text and values drawn from the traced values), masks padded when the plan says so."""
    generator = torch.Generator().manual_seed(seed)
    remade: list[torch.Tensor] = []
    for spec, tensor in zip(built.specs, built.tensors, strict=True):
        new_shape = shape_at(envelope, spec.name, tensor, sizes)
        if spec.source in ("random", "zeros", "ones"):
            made = inputs.make_tensor(spec, new_shape, generator, vocab_size, None)
        else:
            pool = tensor.reshape(-1)
            if pool.numel() == 0:
                made = torch.zeros(new_shape, dtype=tensor.dtype)
            else:
                made = pool[torch.randint(0, pool.numel(), new_shape, generator=generator)]
        if envelope.pad_masks and spec.name.endswith("attention_mask"):
            made = pad_mask(torch.ones(new_shape, dtype=tensor.dtype), generator)
        remade.append(made)
    return remade


def guard_inputs(envelope: Envelope, built: inputs.BuiltInputs, ranges: dict[str, tuple[int, int]]) -> list[GuardInput]:
    """Per input, in order: each dimension's verified range (its axis') or its traced size, with the axis as role."""
    out: list[GuardInput] = []
    for name, tensor in zip(built.names, built.tensors, strict=True):
        axes = envelope.tensor_axes.get(name, [])
        dims: list[int | list[int]] = []
        roles: list[str | None] = []
        for dim in range(tensor.dim()):
            axis = axes[dim] if dim < len(axes) else None
            if axis is not None and axis in ranges:
                lo, hi = ranges[axis]
                dims.append([lo, hi])
            else:
                dims.append(int(tensor.shape[dim]))
            roles.append(axis)
        out.append(GuardInput(name, dims, roles=roles, dtype=tensor.dtype))
    return out


def reseal(bundle: str, ranges: dict[str, list[int]]) -> dict[str, Any]:
    """The `guard` op: rewrite model.pt's guard with narrower ranges (a default envelope that verification
    narrowed), keeping the traced module and the embedded record."""
    path = os.path.join(bundle, MODEL_FILE)
    try:
        module = jit_load(path, "cpu")
        current = read_envelope(module)
        if current is None:
            raise WorkerError("guard", "verify_failed", "model.pt has no envelope guard to narrow")
        specs = []
        for entry in current["inputs"]:
            for d in entry["dims"]:
                if d.get("role") in ranges:
                    d["min"], d["max"] = ranges[d["role"]]
            specs.append(GuardInput.from_json(entry))
        with zipfile.ZipFile(path) as archive:
            record_name = next(n for n in archive.namelist() if n.endswith("/extra/" + RECORD_NAME))
            record = archive.read(record_name)
        guarded = wrap(module.inner, specs)
        record_data = json.loads(record)
        record_data["envelope_guard"] = json.loads(guarded.tsexport_envelope())
        tmp = path + ".tmp"
        record_json = json.dumps(record_data, sort_keys=True).encode("utf-8")
        torch.jit.save(guarded, tmp, _extra_files={RECORD_NAME: record_json})
        os.replace(tmp, path)
    except WorkerError:
        raise
    except Exception as exc:
        raise WorkerError(
            "guard", "serialize_failed", f"cannot narrow the guard: {describe(exc)}", detail=traceback_tail(exc)
        ) from exc
    return {"envelope": read_envelope(guarded)}
