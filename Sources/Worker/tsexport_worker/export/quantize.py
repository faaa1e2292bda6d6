"""Dynamic int8 quantization with per-layer choices, and the per-row cosine both it and verification measure.

The request (`job.target.quantize`) says what to do: which library, which module type, how activations and weights are
quantized, and the cosine to the float32 outputs the chosen set must keep on the traced inputs. This module only
carries it out:

1. each candidate layer alone is swapped for its int8 version and the outputs compared with the float32 model's
   (its sensitivity);
2. the layers are ordered from least to most sensitive, and a binary search finds the largest prefix whose
   quantization together keeps the cosine; every prefix accepted was measured, so the chosen set is known to keep it;
3. the model's copy gets exactly that set; the rest stays float32. What was chosen, and why, is returned for the
   record.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ..protocol import QuantizeSpec

Outputs = list[torch.Tensor]


def row_cosine(actual: torch.Tensor, expected: torch.Tensor) -> float | None:
    """The least cosine similarity between the rows of two outputs, a row being one example of the batch (dimension
    0) with all its values; None for non-float outputs. Two zero rows are equal (1.0); one zero row is 0.0."""
    if not (actual.is_floating_point() and expected.is_floating_point()):
        return None
    if actual.numel() == 0:
        return 1.0
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    rows = a.shape[0] if a.dim() > 1 else 1
    a, e = a.reshape(rows, -1), e.reshape(rows, -1)
    na, ne = a.norm(dim=1), e.norm(dim=1)
    dot = (a * e).sum(dim=1)
    cosine = torch.where((na == 0) & (ne == 0), torch.ones_like(dot), dot / (na * ne).clamp_min(1e-300))
    cosine = torch.where(torch.isfinite(cosine), cosine, torch.zeros_like(cosine))
    return float(cosine.clamp(-1.0, 1.0).min())


def min_cosine(actual: Outputs, expected: Outputs) -> float | None:
    """The least row cosine over every float output (None when no output is float)."""
    values = [c for c in (row_cosine(a, e) for a, e in zip(actual, expected, strict=True)) if c is not None]
    return min(values) if values else None


def _qconfig(weights: str) -> Any:
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    return per_channel_dynamic_qconfig if weights == "per_channel" else default_dynamic_qconfig


def _candidates(model: torch.nn.Module, spec: QuantizeSpec) -> list[str]:
    kinds: tuple[type, ...] = (torch.nn.Linear,) if "torch.nn.Linear" in spec.modules else ()
    return [name for name, module in model.named_modules() if name and type(module) in kinds]


def _swap(model: torch.nn.Module, name: str, module: torch.nn.Module) -> torch.nn.Module:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old: torch.nn.Module = getattr(parent, child)
    setattr(parent, child, module)
    return old


def _torchao_quantized(linear: torch.nn.Module, spec: QuantizeSpec) -> torch.nn.Module:
    """A copy of `linear` with torchao's Int8DynamicActivationInt8WeightConfig: weights int8 per output channel,
    activations quantized per token at run time with the request's mapping. It stays a torch.nn.Linear whose weight is
    a torchao tensor subclass, which torch.export lowers to plain aten ops (the exported program does not need
    torchao). `set_inductor_config=False`: torchao would otherwise change inductor's process-wide settings; the
    compile settings are the request's `aoti.inductor_configs` alone."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, MappingType, quantize_

    mapping = MappingType.ASYMMETRIC if spec.activation_mapping == "asymmetric" else MappingType.SYMMETRIC
    quantized = copy.deepcopy(linear)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_(quantized, Int8DynamicActivationInt8WeightConfig(act_mapping_type=mapping, set_inductor_config=False))
    return quantized


def _quantized(linear: torch.nn.Module, spec: QuantizeSpec) -> torch.nn.Module:
    if spec.library == "torchao":
        return _torchao_quantized(linear, spec)
    import torch.ao.nn.quantized.dynamic as nnqd

    weights = spec.weights

    linear.qconfig = _qconfig(weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice, once per layer
        quantized: torch.nn.Module = nnqd.Linear.from_float(linear)  # type: ignore[no-untyped-call]
    del linear.qconfig
    return quantized


def quantize(
    model: torch.nn.Module, run: Callable[[torch.nn.Module], Outputs], reference: Outputs, spec: QuantizeSpec
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A copy of `model` with the chosen layers quantized, and the record of the choice. `run(m)` gives m's outputs on
    the traced inputs; `reference` is the float32 model's."""
    work = copy.deepcopy(model)
    names = _candidates(work, spec)
    int8 = {name: _quantized(work.get_submodule(name), spec) for name in names}
    forwards = 0

    def cosine_with(chosen: list[str]) -> float:
        nonlocal forwards
        originals = {name: _swap(work, name, int8[name]) for name in chosen}
        try:
            forwards += 1
            measured = min_cosine(run(work), reference)
        finally:
            for name, original in originals.items():
                _swap(work, name, original)
        return 1.0 if measured is None else measured

    alone = {name: cosine_with([name]) for name in names}
    order = sorted(names, key=lambda n: (-alone[n], names.index(n)))
    # The largest prefix of `order` that keeps the cosine (0 layers always does: the float32 model itself).
    low, high, best = 0, len(order), 1.0
    while low < high:
        middle = (low + high + 1) // 2
        measured = cosine_with(order[:middle])
        if measured >= spec.select_min_cosine:
            low, best = middle, measured
        else:
            high = middle - 1
    chosen = order[:low]
    for name in chosen:
        _swap(work, name, int8[name])
    record = {
        "scheme": spec.scheme,
        "library": spec.library,
        "activations": spec.activations,
        "activation_mapping": spec.activation_mapping,
        "config": (
            "Int8DynamicActivationInt8WeightConfig" if spec.library == "torchao"
            else "torch.ao.nn.quantized.dynamic.Linear"
        ),
        "modules": spec.modules,
        "weights": spec.weights,
        "select_min_cosine": spec.select_min_cosine,
        "candidates": len(names),
        "quantized": [name for name in names if name in set(chosen)],
        "kept_float": [{"name": name, "cosine_alone": alone[name]} for name in order[low:]],
        "cosine_on_traced_inputs": best,
        "forwards": forwards,
        "how": "each Linear alone quantized and compared with the float32 outputs on the traced inputs; the "
        "largest set of the least sensitive layers that keeps select_min_cosine is quantized, the rest kept float32",
    }
    return work.eval(), record
