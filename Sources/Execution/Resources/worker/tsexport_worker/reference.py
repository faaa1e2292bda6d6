"""The reference stage: sample inputs and eager reference outputs at the traced shape and every check shape, written
as the bundle's two safetensors files.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from . import inputs
from .bundle import REFERENCE_FILE, SAMPLE_FILE, canonical_safetensors, readable_as_others
from .envelope import Envelope, inputs_at
from .errors import describe
from .outputs import flatten
from .protocol import Job
from .structure import keep_structure
from .trace import ForwardWrapper, as_float32

if TYPE_CHECKING:
    from .split import SplitResult


def cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu").contiguous().clone()


def traced_shape(tensors: list[torch.Tensor]) -> list[int]:
    """[batch, sequence] of the agreed inputs (fewer entries when no input has those dimensions)."""
    shape: list[int] = []
    for dim in (0, 1):
        sizes = [int(t.shape[dim]) for t in tensors if t.dim() > dim]
        if not sizes:
            break
        shape.append(sizes[0])
    return shape


def write_reference(
    staging: str,
    built: inputs.BuiltInputs,
    traced_outputs: list[tuple[str, torch.Tensor]],
    wrapper: ForwardWrapper,
    job: Job,
    device: str,
    split: SplitResult | None = None,
    float_wrapper: ForwardWrapper | None = None,
) -> list[dict[str, Any]]:
    """Sample inputs and eager reference outputs for the traced shape and every check shape (and the split
    artifacts' cases, named `<role>.<case>`, listed in the `tsexport.artifacts` metadata). With `float_wrapper`
    (reduced precision) the float32 model's outputs are written beside them as `<case>/float32_output_<i>`."""
    samples: dict[str, torch.Tensor] = {}
    references: dict[str, torch.Tensor] = {}
    cases: list[dict[str, Any]] = [{"case": "traced", "shape": traced_shape(built.tensors)}]
    for name, tensor in zip(built.names, built.tensors, strict=True):
        samples[f"traced/{name}"] = cpu_copy(tensor)
    for i, (_, tensor) in enumerate(traced_outputs):
        references[f"traced/output_{i}"] = cpu_copy(tensor)

    def float32_outputs(case: str, tensors: list[torch.Tensor]) -> None:
        if float_wrapper is None:
            return
        args = [t.to(device) for t in as_float32(tensors)]
        with torch.no_grad():
            for i, (_, tensor) in enumerate(flatten(float_wrapper.call_model(*args))):
                references[f"{case}/float32_output_{i}"] = cpu_copy(tensor)

    float32_outputs("traced", built.tensors)
    vocab_size = inputs.config_vocab_size(getattr(wrapper.model, "config", None))
    pad_id = getattr(getattr(wrapper.model, "config", None), "pad_token_id", None)
    plan = Envelope.parse(job.trace.envelope)
    traced = plan.traced_sizes(built) if plan is not None else {}
    if plan is not None:
        cases[0]["sizes"] = traced
    work: list[tuple[str, list[torch.Tensor], dict[str, Any]]] = []
    if plan is None:
        for k, shape in enumerate(job.trace.check_shapes):
            entry: dict[str, Any] = {"case": f"check{k}", "shape": list(shape)}
            remade = keep_structure(built, inputs.remake(built, shape, job.model.seed + 1 + k, vocab_size),
                                    job.model.seed + 1 + k, pad_id)
            work.append((f"check{k}", remade, entry))
    else:
        for k, point in enumerate(plan.points):
            if point.case == "traced":
                continue
            sizes = plan.resolve(point, traced)
            remade = keep_structure(built, inputs_at(plan, built, sizes, job.model.seed + 1 + k, vocab_size),
                                    job.model.seed + 1 + k, pad_id)
            entry = {"case": point.case, "shape": traced_shape(remade), "sizes": sizes}
            work.append((point.case, remade, entry))
    for case, remade, entry in work:
        shape = entry["shape"]
        for name, tensor in zip(built.names, remade, strict=True):
            samples[f"{case}/{name}"] = cpu_copy(tensor)
        try:
            with torch.no_grad():
                outputs = flatten(wrapper.call_model(*[t.to(device) for t in remade]))
            for i, (_, tensor) in enumerate(outputs):
                references[f"{case}/output_{i}"] = cpu_copy(tensor)
            float32_outputs(case, remade)
        except Exception as exc:  # noqa: BLE001 - the eager model itself refuses this input
            entry["rejected_by_model"] = f"the eager model refuses it at shape {shape} ({describe(exc)})"
        cases.append(entry)
    metadata = {"tsexport.cases": json.dumps(cases), "tsexport.inputs": json.dumps(built.names)}
    if split is not None:
        for part in split.artifacts:
            samples.update(part.samples)
            references.update(part.references)
        metadata["tsexport.artifacts"] = json.dumps(
            [{"role": p.role, "file": p.file, "inputs": p.input_names, "cases": p.cases} for p in split.artifacts]
        )
    for tensors, name in ((samples, SAMPLE_FILE), (references, REFERENCE_FILE)):
        save_file(tensors, os.path.join(staging, name), metadata=metadata)
        canonical_safetensors(os.path.join(staging, name))
        readable_as_others(os.path.join(staging, name))
    return cases
