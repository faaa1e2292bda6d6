"""AOTInductor: `model.pt2` beside the TorchScript `model.pt`, from the same keyword-binding, tuple-returning wrapper
(trace.ForwardWrapper), exported with `torch.export.export` over the serving envelope and compiled and packaged with
`torch._inductor.aoti_compile_and_package`. Inputs are positional in manifest order, as for model.pt.

What torch 2.13 (CPU) does, measured on tiny BERT / DistilBERT / GPT-2 (Tests/python/test_aoti.py):

* The wrapper's `forward(*args)` is one var-positional parameter, so `dynamic_shapes` is `(per_input_tuple,)`: a
  one-element tuple holding one `{dim: Dim}` mapping per positional input (a flat tuple per input is refused with
  "inputs has 1 elements, but dynamic_shapes has 2 elements"); a module whose forward names its parameters gets
  the flat tuple.
* One `torch.export.Dim(axis, min=, max=)` per envelope axis, the same object for every tensor dimension the axis
  governs (that is how export learns that input_ids and attention_mask share batch and sequence).
* 0/1 specialisation. An example of size 1 at a dimension marked with `Dim(min=1)` fails:
  "Constraints violated (batch)! You marked batch as dynamic but your code specialized it to be a constant (1)".
  `Dim.DYNAMIC` fails the same way ("export 0/1 specialized due to hint of 1"); `Dim.AUTO` silently makes the
  dimension static (1); `torch.fx.experimental._config.backed_size_oblivious=True` gets batch through but BERT then
  fails on sequence ("generated guard L['args'][0].size()[1] != 1"). What works: keep `Dim(min=1, max=N)` and export
  at an example of size >= 2. So an axis whose traced size is 0 or 1 (or outside its range) is exported at
  `clamp(2, min, max)`; the example tensors are remade by repeating their values along that dimension (ids stay
  in the vocabulary, masks stay masks). The program's range constraints then say [1, N], and the compiled package
  runs at size 1 (tiny BERT at batch 1 / sequence 1: max abs error against eager about 2e-7). The graph is the one
  traced for sizes >= 2 (export assumes a backed size is not 0 or 1), so size-1 corners still need verifying.
* An axis whose range is a single size, or lies within [0, 1], is left static (no Dim).
* The compiled package checks nothing about its inputs unless AOTI_RUNTIME_CHECK_INPUTS=1 is set when it runs:
  without it, shapes outside the envelope run (batch 5 of [1, 4], sequence 600 of [1, 32]: outputs come back) and a
  size-0 dimension crashes the process (SIGSEGV). With it, the package raises RuntimeError "input_handles[0]: dim
  value is too large at 0, expected to be <= 4, but got: 5" (and dtype mismatches: "unmatched dtype"). Its lower
  bound is 2 for every dynamic dimension (inductor's own assumption), which would refuse batch 1, so when an axis'
  minimum is below 2 the package is compiled with `aot_inductor.check_lowerbound=False` (then only upper bounds,
  static sizes and dtypes are checked).
* Export failures become WorkerError(stage "export_aoti", code "export_failed"), naming the axis (field
  `spec.trace.envelope.<axis>`) when torch's message names a Dim or an input dimension, else field
  `spec.output.formats`.
"""

from __future__ import annotations

import inspect
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import WorkerError, traceback_tail
from .envelope import Envelope

STAGE = "export_aoti"
CHECK_INPUTS_ENV = "AOTI_RUNTIME_CHECK_INPUTS"
FORMATS_FIELD = "spec.output.formats"

ProgressFn = Callable[[str, str, int | None], None]


def _no_progress(stage: str, status: str, elapsed_ms: int | None) -> None:
    pass


def _dim_name(axis: str, taken: set[str]) -> str:
    """A Python identifier for the Dim (torch prints it in its messages and suggested fixes)."""
    name = re.sub(r"\W", "_", axis) or "axis"
    if name[0].isdigit():
        name = "d_" + name
    base, n = name, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def export_size(traced: int, lo: int, hi: int) -> int:
    """The size to export a dynamic axis at: the traced size when it is >= 2 and inside [lo, hi], else the
    nearest size >= 2 in the range (export specialises sizes 0 and 1)."""
    if traced >= 2 and lo <= traced <= hi:
        return traced
    return min(max(2, lo), hi)


def plan_dims(
    example: Sequence[torch.Tensor], names: Sequence[str], envelope: Envelope | None, traced_sizes: dict[str, int]
) -> tuple[dict[str, tuple[int, int]], dict[str, int], dict[str, str]]:
    """The dynamic axes (axis -> (min, max)) that govern some input dimension, the size to export each at, and the
    Dim names. Axes with a single size or within [0, 1] stay static."""
    if envelope is None:
        return {}, {}, {}
    ranges = envelope.ranges(traced_sizes)
    used: list[str] = []
    for name, tensor in zip(names, example, strict=True):
        for dim, axis in enumerate(envelope.tensor_axes.get(name, [])):
            if axis is not None and dim < tensor.dim() and axis in ranges and axis not in used:
                used.append(axis)
    dynamic: dict[str, tuple[int, int]] = {}
    sizes: dict[str, int] = {}
    dim_names: dict[str, str] = {}
    taken: set[str] = set()
    for axis in used:
        lo, hi = ranges[axis]
        if hi <= lo or hi < 2:
            continue
        dynamic[axis] = (lo, hi)
        sizes[axis] = export_size(traced_sizes.get(axis, lo), lo, hi)
        dim_names[axis] = _dim_name(axis, taken)
    return dynamic, sizes, dim_names


def _resize(tensor: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """`tensor` at `size` along `dim`, its values repeated cyclically (zeros when it has none there)."""
    current = int(tensor.shape[dim])
    if current == size:
        return tensor
    if current == 0:
        shape = list(tensor.shape)
        shape[dim] = size
        return torch.zeros(shape, dtype=tensor.dtype)
    index = torch.arange(size) % current
    return tensor.index_select(dim, index).contiguous()


def remake_example(
    example: Sequence[torch.Tensor], names: Sequence[str], envelope: Envelope | None, sizes: dict[str, int]
) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for name, tensor in zip(names, example, strict=True):
        axes = envelope.tensor_axes.get(name, []) if envelope is not None else []
        for dim, axis in enumerate(axes):
            if axis is not None and axis in sizes and dim < tensor.dim():
                tensor = _resize(tensor, dim, sizes[axis])
        out.append(tensor)
    return out


def dynamic_shapes_for(
    example: Sequence[torch.Tensor],
    names: Sequence[str],
    envelope: Envelope | None,
    dynamic: dict[str, tuple[int, int]],
    dim_names: dict[str, str],
    var_positional: bool = True,
) -> tuple[Any, ...]:
    """`dynamic_shapes` for `forward(*args)`: one element (the var-positional tuple) holding, per positional input,
    its {dimension: Dim} (None for an all-static input); for a forward with named parameters, the per-input tuple
    itself. One Dim object per axis, shared by all its dimensions."""
    made = {axis: torch.export.Dim(dim_names[axis], min=lo, max=hi) for axis, (lo, hi) in dynamic.items()}
    per_input: list[dict[int, Any] | None] = []
    for name, tensor in zip(names, example, strict=True):
        axes = envelope.tensor_axes.get(name, []) if envelope is not None else []
        spec = {dim: made[axis] for dim, axis in enumerate(axes) if axis in made and dim < tensor.dim()}
        per_input.append(spec or None)
    return (tuple(per_input),) if var_positional else tuple(per_input)


def takes_var_positional(module: torch.nn.Module) -> bool:
    """Whether `module.forward` takes `*args` first (trace.ForwardWrapper does)."""
    try:
        parameters = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return True
    return bool(parameters) and parameters[0].kind is inspect.Parameter.VAR_POSITIONAL


_ARG_DIM = re.compile(r"(?:L\['args'\]|inputs\['args'\])\[(\d+)\]\.(?:size\(\)|shape)\[(\d+)\]")
_VIOLATED = re.compile(r"Constraints violated \(([^)]*)\)")


def _named_axis(
    text: str, names: Sequence[str], envelope: Envelope | None, dim_names: dict[str, str]
) -> str | None:
    """The envelope axis torch's message is about: a Dim named in "Constraints violated (...)", else an input
    dimension `L['args'][i].size()[d]` / `inputs['args'][i].shape[d]` mapped through the envelope."""
    by_dim = {dim_name: axis for axis, dim_name in dim_names.items()}
    found = _VIOLATED.search(text)
    if found:
        for token in (t.strip() for t in found.group(1).split(",")):
            if token in by_dim:
                return by_dim[token]
    for match in _ARG_DIM.finditer(text):
        index, dim = int(match.group(1)), int(match.group(2))
        if envelope is not None and index < len(names):
            axes = envelope.tensor_axes.get(names[index], [])
            if dim < len(axes) and axes[dim] is not None:
                return axes[dim]
    for dim_name, axis in by_dim.items():
        if re.search(rf"\b{re.escape(dim_name)}\b", text):
            return axis
    return None


def _reason(text: str, dim_names: dict[str, str], names: Sequence[str], limit: int = 300) -> str:
    """torch's reason in one line: the first "  - " item of a constraint violation, else the first line, with
    torch's advice (TORCH_LOGS, draft_export, exportdb links) dropped and input references made readable."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    noise = ("For more information", "The error above occurred", "Suggested fixes", "https://", "run with TORCH_LOGS")
    items = [line[2:].strip() for line in lines if line.startswith("- ")]
    kept = [line for line in lines if not line.startswith(noise)]
    reason = items[0] if items else (kept[0] if kept else (lines[0] if lines else ""))
    reason = re.sub(r"\s*For more information, run with TORCH_LOGS=\S+", "", reason)
    reason = re.sub(r"^Constraints violated \([^)]*\)!\s*", "", reason)

    def readable(match: re.Match[str]) -> str:
        index, dim = int(match.group(1)), int(match.group(2))
        return f"{names[index]} dimension {dim}" if index < len(names) else match.group(0)

    reason = _ARG_DIM.sub(readable, reason).rstrip(".")
    if len(reason) > limit:
        reason = reason[: limit - 1] + "…"
    return reason


def export_error(
    exc: BaseException,
    names: Sequence[str],
    envelope: Envelope | None,
    dynamic: dict[str, tuple[int, int]],
    dim_names: dict[str, str],
    what: str = "torch.export",
) -> WorkerError:
    text = str(exc)
    axis = _named_axis(text, names, envelope, dim_names)
    reason = _reason(text, dim_names, names)
    kind = type(exc).__name__
    if "data-dependent" in text or "GuardOnDataDependent" in kind:
        lead = f"{what} cannot export the model for AOTInductor: it has data-dependent control flow"
    elif axis is not None and axis in dynamic:
        lo, hi = dynamic[axis]
        lead = f"{what} cannot keep the `{axis}` axis dynamic over [{lo}, {hi}]"
    elif axis is not None:
        lead = f"{what} cannot export the model for AOTInductor at the `{axis}` axis"
    else:
        lead = f"{what} cannot export the model for AOTInductor"
    message = f"{lead} ({kind}: {reason})." if reason else f"{lead} ({kind})."
    field = f"spec.trace.envelope.{axis}" if axis is not None else FORMATS_FIELD
    return WorkerError(STAGE, "export_failed", message, field=field, detail=traceback_tail(exc))


def export_aoti(
    wrapper: torch.nn.Module,
    example: list[torch.Tensor],
    names: list[str],
    envelope: Envelope | None,
    traced_sizes: dict[str, int],
    path: str,
    progress: ProgressFn = _no_progress,
    inductor_configs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export `wrapper` (forward(*inputs) in manifest order, returning a tuple) over the envelope and compile and
    package it into `path` (model.pt2). Returns the facts: seconds for export and compile, the package's bytes,
    the dynamic axes ({axis: [min, max]}), the size each was exported at and the inductor configs used."""
    progress(STAGE, "start", None)
    started = time.perf_counter()
    dynamic, sizes, dim_names = plan_dims(example, names, envelope, traced_sizes)
    remade = remake_example(example, names, envelope, sizes)
    shapes = dynamic_shapes_for(remade, names, envelope, dynamic, dim_names, takes_var_positional(wrapper))
    wrapper.eval()
    try:
        with torch.no_grad():
            program = torch.export.export(wrapper, tuple(remade), dynamic_shapes=shapes)
    except Exception as exc:  # every export failure is reported as export_failed
        raise export_error(exc, names, envelope, dynamic, dim_names) from exc
    exported = time.perf_counter()
    configs: dict[str, Any] = dict(inductor_configs or {})
    if any(lo < 2 for lo, _ in dynamic.values()):
        configs.setdefault("aot_inductor.check_lowerbound", False)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        # Inductor applies `freezing` only when grad is disabled during the compile; with grad enabled it silently
        # compiles the weights as inputs (no constant folding, no prepacked GEMM weights).
        with torch.no_grad():
            packaged = torch._inductor.aoti_compile_and_package(program, package_path=path, inductor_configs=configs)
    except Exception as exc:
        raise export_error(exc, names, envelope, dynamic, dim_names, what="AOTInductor") from exc
    compiled = time.perf_counter()
    progress(STAGE, "done", round((compiled - started) * 1000))
    return {
        "path": str(packaged),
        "export_seconds": round(exported - started, 3),
        "compile_seconds": round(compiled - exported, 3),
        "bytes": os.path.getsize(packaged),
        "dynamic_dims": {axis: [lo, hi] for axis, (lo, hi) in dynamic.items()},
        "export_sizes": dict(sizes),
        "range_constraints": [
            [int(r.lower), int(r.upper)] for r in program.range_constraints.values() if r.upper.is_finite
        ],
        "inductor_configs": configs,
    }


def _flatten(value: Any, out: list[torch.Tensor]) -> None:
    if isinstance(value, torch.Tensor):
        out.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _flatten(item, out)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _flatten(item, out)
    elif hasattr(value, "to_tuple"):
        _flatten(value.to_tuple(), out)


def load_aoti(path: str) -> Any:
    return torch._inductor.aoti_load_package(path)


def run_aoti(path: str, inputs: list[torch.Tensor], model: Any = None) -> list[torch.Tensor]:
    """Load `path` (unless a loaded `model` is given) and run it on the positional inputs; the outputs flattened."""
    loaded = model if model is not None else load_aoti(path)
    with torch.no_grad():
        result = loaded(*inputs)
    out: list[torch.Tensor] = []
    _flatten(result, out)
    return out
