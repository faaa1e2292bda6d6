"""The trace stage: the keyword-binding wrapper, the eager forward on the dummy inputs, the tracer (the API the job
names), and freeze / optimize_for_inference.
"""

from __future__ import annotations

import io
import sys
import warnings
from typing import Any

import torch

from ..errors import WorkerError, describe, traceback_tail
from ..outputs import flatten
from ..protocol import ModelSpec
from ..torchjit import TracerWarning
from ..torchjit import trace as jit_trace


class ForwardWrapper(torch.nn.Module):
    """Calls the model with keyword arguments (names in manifest order, then the job's constant `forward`
    arguments) and, for torchscript, returns tuples."""

    def __init__(
        self, model: torch.nn.Module, names: list[str], tuple_outputs: bool, constants: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.names = list(names)
        self.tuple_outputs = tuple_outputs
        self.constants = dict(constants or {})

    def call_model(self, *args: torch.Tensor) -> Any:
        return self.model(**dict(zip(self.names, args, strict=True)), **self.constants)

    def forward(self, *args: torch.Tensor) -> Any:
        output = self.call_model(*args)
        if self.tuple_outputs and hasattr(output, "to_tuple"):
            return output.to_tuple()
        return output


def as_float32(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The inputs the float32 model takes (reduced precision's reference): float tensors cast to float32, the rest
    as they are."""
    return [t.float() if t.is_floating_point() else t for t in tensors]


def format_warning(warning: warnings.WarningMessage) -> str:
    where = warning.filename.replace("\\", "/")
    for marker in ("site-packages/", "dist-packages/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    first = str(warning.message).strip().splitlines()[0] if str(warning.message).strip() else ""
    return f"{first} ({where}:{warning.lineno})"


def find_cache(output: Any) -> Any:
    """The first key/value cache object (DynamicCache, EncoderDecoderCache, ...) inside an output, else None."""
    if output is None or isinstance(output, torch.Tensor):
        return None
    if any(base.__name__ == "Cache" for base in type(output).__mro__) or type(output).__name__.endswith("Cache"):
        return output
    values = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else ()
    for value in values:
        found = find_cache(value)
        if found is not None:
            return found
    return None


def cache_error(model: torch.nn.Module, cache: Any, spec: ModelSpec) -> WorkerError:
    """Why a model that returns its key/value cache cannot be traced faithfully, and the setting that helps."""
    if "use_cache" in spec.config:
        how = "set spec.model.config.use_cache: false (or remove it: torchscript: true then turns the cache off)"
        where = "spec.model.config.use_cache"
    else:
        how = "set spec.model.config.use_cache: false, or spec.model.torchscript: true, which turns it off"
        where = "spec.model.config.use_cache" if spec.torchscript else "spec.model.torchscript"
    return WorkerError(
        "trace", "trace_failed",
        f"{type(model).__name__} returns its key/value cache ({type(cache).__name__}) because use_cache is on: a "
        "traced module returns tensors only, and a cache traced at one length silently stops matching the model at "
        f"the next step; {how}. For generation outside Python see spec.trace.split (encoder-decoder models)",
        field=where,
    )


def forward_hint(model: torch.nn.Module, names: list[str]) -> tuple[str, str | None]:
    """A sentence (and a manifest field) explaining a failed eager forward, where the cause is a known one."""
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False) and not {"decoder_input_ids", "decoder_inputs_embeds"} & set(names):
        return (
            f"; {type(model).__name__} is an encoder-decoder model and most such models need decoder_input_ids: add a "
            "tensor {name: decoder_input_ids, from: random, shape: [batch, sequence]} (the decoder's inputs are "
            "traced at that length too)",
            "spec.inputs.tensors",
        )
    return "", None


def run_eager(wrapper: ForwardWrapper, tensors: list[torch.Tensor], spec: ModelSpec) -> list[tuple[str, torch.Tensor]]:
    """The eager outputs, named; an exception in forward() is `forward_failed`, a returned cache `trace_failed`."""
    try:
        with torch.no_grad():
            raw = wrapper.call_model(*tensors)
    except Exception as exc:  # the model's own code failed
        hint, hint_field = forward_hint(wrapper.model, wrapper.names)
        raise WorkerError(
            "trace", "forward_failed", f"the model's forward() failed on the dummy inputs: {describe(exc)}{hint}",
            field=hint_field, detail=traceback_tail(exc),
        ) from exc
    cache = find_cache(raw)
    if cache is not None:
        raise cache_error(wrapper.model, cache, spec)
    try:
        return flatten(raw)
    except TypeError as exc:
        raise WorkerError(
            "trace", "trace_failed", f"the model's outputs cannot be traced: {describe(exc)}",
            detail=traceback_tail(exc),
        ) from exc


def trace_module(
    wrapper: ForwardWrapper, tensors: list[torch.Tensor], strict: bool, api: str
) -> tuple[torch.jit.ScriptModule, list[str]]:
    """The traced module (traced with the job's `trace.api`) and every TracerWarning raised while tracing (none
    filtered)."""
    example = tuple(tensors)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TracerWarning)
        try:
            if api == "torch.neuron.trace":
                import torch_neuron  # noqa: F401  (registers torch.neuron)

                traced = torch.neuron.trace(wrapper, example_inputs=list(example))  # type: ignore[attr-defined]
            elif api == "torch_neuronx.trace":
                import torch_neuronx

                traced = torch_neuronx.trace(wrapper, example)
            else:
                traced = jit_trace(wrapper, example, strict)
        except Exception as exc:
            hint = ""
            if "strict" in str(exc) or "dict" in str(exc).lower():
                hint = " (dict outputs need spec.model.torchscript: true or spec.trace.strict: false)"
            raise WorkerError(
                "trace", "trace_failed", f"tracing failed: {describe(exc)}{hint}",
                field="spec.trace.strict" if hint else None, detail=traceback_tail(exc),
            ) from exc
    tracer_warnings = []
    for warning in caught:
        if issubclass(warning.category, TracerWarning):
            tracer_warnings.append(format_warning(warning))
        else:
            text = warnings.formatwarning(warning.message, warning.category, warning.filename, warning.lineno)
            sys.stderr.write(text)
    # Under strict, tracer warnings are judged by the Swift side against the envelope's verification.
    return traced, tracer_warnings


def optimize(module: torch.jit.ScriptModule, how: str) -> torch.jit.ScriptModule:
    """`module` frozen or optimized for inference, as the module `torch.jit.load` gives back for it.

    The module `torch.jit.freeze` returns cannot be the submodule of a scripted module (the envelope guard); the same
    module saved and loaded again keeps the optimized graph and can be, as it is when the `guard` op rewraps
    `model.pt`'s inner module.
    """
    try:
        if how == "freeze":
            return _reloaded(torch.jit.freeze(module.eval()))
        if how == "optimize_for_inference":
            return _reloaded(torch.jit.optimize_for_inference(module.eval()))
    except Exception as exc:
        raise WorkerError(
            "trace", "trace_failed", f"{how} failed on the traced module: {describe(exc)}",
            field="spec.target.optimize", detail=traceback_tail(exc),
        ) from exc
    return module


def _reloaded(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    loaded: torch.jit.ScriptModule = torch.jit.load(buffer)  # type: ignore[no-untyped-call]
    return loaded
