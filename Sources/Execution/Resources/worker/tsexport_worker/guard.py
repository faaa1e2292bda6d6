"""The serving envelope: a scripted guard around a traced module that refuses input shapes it was not verified for.

A traced module answers for any shape it can compute, even where the trace baked in the traced shape and the answer is
wrong. `wrap` puts a `torch.jit.script`-ed module in front of it whose `forward` takes the inputs by their tensor names
(Triton's pytorch_libtorch backend binds inputs by forward argument name), checks each input's rank, dtype (when given)
and every dimension against the verified range, raises a `RuntimeError` naming the tensor, the dimension and the range
when one is outside, and otherwise returns the traced module's outputs unchanged (same values, same return type).

    tsexport envelope: input_ids dimension 1 (sequence) is 300, outside the verified range [1, 128]

The envelope is readable from the artifact: `module.tsexport_envelope()` (Python, or `run_method` in C++) returns it as
JSON (`ENVELOPE_FORMAT`). `torch.jit.freeze` inlines exported methods away unless asked to keep them: pass
`preserved_attrs=["tsexport_envelope"]` (the checks in `forward` survive freezing either way).

A scripted `forward` needs a fixed signature, so the guard's source is generated per envelope, compiled as a module
whose lines are served to `inspect` through linecache (TorchScript compiles from source text), and scripted; nothing is
written to disk, and the artifact's debug information names `tsexport_guard.py`, the same for every export.
"""

from __future__ import annotations

import json
import keyword
import linecache
import re
import sys
import threading
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch

ENVELOPE_FORMAT = "tsexport.envelope/1"
ENVELOPE_METHOD = "tsexport_envelope"
MESSAGE_PREFIX = "tsexport envelope: "
GUARD_MODULE = "tsexport_guard"  # the guard's TorchScript type is __torch__.tsexport_guard.TsexportGuard
GUARD_CLASS = "TsexportGuard"
GUARD_FILE = f"{GUARD_MODULE}.py"  # the generated source's name in TorchScript tracebacks; never written to disk
_SCRIPTING = threading.Lock()  # one generated module under GUARD_MODULE at a time

# Names the generated source itself uses, which a parameter must not shadow (besides Python's keywords).
_RESERVED = frozenset({"self", "torch", "str", "RuntimeError", "inner", "__init__", "forward"})

DimSpec = Union[int, Sequence[int]]  # a fixed size, or [min, max] inclusive


@dataclass(frozen=True)
class GuardDim:
    """One dimension's verified range, inclusive; `min == max` is a fixed size. `role` names it in messages."""

    min: int
    max: int
    role: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.min, bool) or isinstance(self.max, bool) or not isinstance(self.min, int) or not isinstance(
            self.max, int
        ):
            raise TypeError(f"a dimension's bounds are ints, got [{self.min!r}, {self.max!r}]")
        if self.min < 0 or self.max < self.min:
            raise ValueError(f"a dimension's range must satisfy 0 <= min <= max, got [{self.min}, {self.max}]")

    @property
    def fixed(self) -> bool:
        return self.min == self.max

    def label(self, index: int) -> str:
        return self.role if self.role else f"dim {index}"


def _dim(spec: DimSpec | GuardDim, role: str | None) -> GuardDim:
    if isinstance(spec, GuardDim):
        return spec if role is None or spec.role else GuardDim(spec.min, spec.max, role)
    if isinstance(spec, int) and not isinstance(spec, bool):
        return GuardDim(spec, spec, role)
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence) or len(spec) != 2:
        raise TypeError(f"a dimension is a fixed size or [min, max], got {spec!r}")
    return GuardDim(spec[0], spec[1], role)


@dataclass(frozen=True, init=False)
class GuardInput:
    """One input tensor of the guarded module, in the traced module's positional order.

    `name`: the tensor's name ("input_ids"); the guard's forward argument is this name made a Python identifier
    (see `parameter_name`). `dims`: per dimension a fixed size (int), [min, max] (inclusive) or a `GuardDim`; the rank
    is `len(dims)`. `roles`: optional names for the dimensions ("batch", "sequence", "decoder_sequence"; None or a
    missing entry reads "dim N"). `dtype`: optional torch dtype name ("int64", "float32") the input must have.
    """

    name: str
    dims: tuple[GuardDim, ...]
    dtype: str | None = None

    def __init__(
        self,
        name: str,
        dims: Sequence[DimSpec | GuardDim],
        roles: Sequence[str | None] | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"an input's name is a non-empty string, got {name!r}")
        roles = list(roles or [])
        if len(roles) > len(dims):
            raise ValueError(f"{name}: {len(roles)} roles for {len(dims)} dimensions")
        roles += [None] * (len(dims) - len(roles))
        dtype_name: str | None = None
        if dtype is not None:
            dtype_name = str(dtype).removeprefix("torch.")
            if not isinstance(getattr(torch, dtype_name, None), torch.dtype):
                raise ValueError(f"{name}: unknown dtype {dtype!r}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dims", tuple(_dim(spec, role) for spec, role in zip(dims, roles)))
        object.__setattr__(self, "dtype", dtype_name)

    @property
    def rank(self) -> int:
        return len(self.dims)

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "rank": self.rank,
            "dims": [{"index": i, "role": d.role, "min": d.min, "max": d.max} for i, d in enumerate(self.dims)],
        }
        if self.dtype is not None:
            entry["dtype"] = self.dtype
        return entry

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> GuardInput:
        dims = [GuardDim(int(d["min"]), int(d["max"]), d.get("role")) for d in entry["dims"]]
        if "rank" in entry and int(entry["rank"]) != len(dims):
            raise ValueError(f"{entry['name']}: rank {entry['rank']} but {len(dims)} dimensions")
        return cls(str(entry["name"]), dims, dtype=entry.get("dtype"))


# ---------------------------------------------------------------------------------------------------------------
# Names


def parameter_name(name: str) -> str:
    """A tensor name made a Python identifier: other characters become `_`, a leading digit gets `_`, and a keyword
    or a name the generated code uses gets a trailing `_` ("pixel-values" → "pixel_values", "class" → "class_")."""
    ident = re.sub(r"\W", "_", name, flags=re.ASCII)
    if not ident or ident[0].isdigit():
        ident = "_" + ident
    if keyword.iskeyword(ident) or keyword.issoftkeyword(ident) or ident in _RESERVED:
        ident += "_"
    return ident


def parameter_names(inputs: Sequence[GuardInput]) -> list[str]:
    """`parameter_name` for each input, made unique by `_2`, `_3`… where two names sanitise alike."""
    names: list[str] = []
    taken: set[str] = set()
    for spec in inputs:
        base = parameter_name(spec.name)
        ident, n = base, 1
        while ident in taken:
            n += 1
            ident = f"{base}_{n}"
        taken.add(ident)
        names.append(ident)
    return names


# ---------------------------------------------------------------------------------------------------------------
# Envelope, messages and source


def envelope(inputs: Sequence[GuardInput]) -> dict[str, Any]:
    """The envelope as JSON data: format, inputs (name, forward argument, rank, dims with role/min/max, dtype)."""
    entries = []
    for spec, arg in zip(inputs, parameter_names(inputs)):
        entry = spec.to_json()
        entry["argument"] = arg
        entries.append(entry)
    return {"format": ENVELOPE_FORMAT, "inputs": entries}


def envelope_json(inputs: Sequence[GuardInput]) -> str:
    return json.dumps(envelope(inputs), sort_keys=True, separators=(",", ":"))


def dim_message(spec: GuardInput, index: int, size: int | str) -> str:
    """The refusal of dimension `index` of `spec` at `size` (the generated code builds the same text)."""
    d = spec.dims[index]
    return (
        f"{MESSAGE_PREFIX}{spec.name} dimension {index} ({d.label(index)}) is {size}, "
        f"outside the verified range [{d.min}, {d.max}]"
    )


def rank_message(spec: GuardInput, rank: int | str) -> str:
    labels = ", ".join(d.label(i) for i, d in enumerate(spec.dims))
    return f"{MESSAGE_PREFIX}{spec.name} has rank {rank}, expected rank {spec.rank} ({labels})"


def dtype_message(spec: GuardInput) -> str:
    return f"{MESSAGE_PREFIX}{spec.name} must have dtype {spec.dtype}, the verified dtype"


def _lit(text: str) -> str:
    """A TorchScript string literal (double quotes; its lexer takes JSON's escapes)."""
    return json.dumps(text, ensure_ascii=True)


def _split(message: str, marker: str) -> tuple[str, str]:
    head, _, tail = message.partition(marker)
    return head, tail


def guard_source(inputs: Sequence[GuardInput]) -> str:
    """The Python/TorchScript source of the guard class for `inputs`."""
    args = parameter_names(inputs)
    lines = [
        f'"""tsexport serving-envelope guard, generated by tsexport_worker.guard ({ENVELOPE_FORMAT})."""',
        "import torch",
        "",
        "",
        f"class {GUARD_CLASS}(torch.nn.Module):",
        "    def __init__(self, inner: torch.nn.Module) -> None:",
        "        super().__init__()",
        "        self.inner = inner",
        "",
        "    def forward(self, " + ", ".join(f"{a}: torch.Tensor" for a in args) + "):",
    ]
    marker = "\x00"
    for spec, arg in zip(inputs, args):
        head, tail = _split(rank_message(spec, marker), marker)
        lines += [
            f"        if {arg}.dim() != {spec.rank}:",
            f"            raise RuntimeError({_lit(head)} + str({arg}.dim()) + {_lit(tail)})",
        ]
        if spec.dtype is not None:
            lines += [
                f"        if {arg}.dtype != torch.{spec.dtype}:",
                f"            raise RuntimeError({_lit(dtype_message(spec))})",
            ]
        for i, d in enumerate(spec.dims):
            head, tail = _split(dim_message(spec, i, marker), marker)
            test = f"{arg}.size({i}) != {d.min}" if d.fixed else f"{arg}.size({i}) < {d.min} or {arg}.size({i}) > {d.max}"
            lines += [
                f"        if {test}:",
                f"            raise RuntimeError({_lit(head)} + str({arg}.size({i})) + {_lit(tail)})",
            ]
    lines += [
        "        return self.inner(" + ", ".join(args) + ")",
        "",
        "    @torch.jit.export",
        f"    def {ENVELOPE_METHOD}(self) -> str:",
        f"        return {_lit(envelope_json(inputs))}",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Wrapping


def _positional_arity(traced: torch.jit.ScriptModule) -> int | None:
    forward: Any = traced.forward
    try:
        arguments = forward.schema.arguments
    except (AttributeError, RuntimeError):
        return None
    return len([a for a in arguments if a.name != "self"])


def wrap(traced: torch.jit.ScriptModule, inputs: Sequence[GuardInput]) -> torch.jit.ScriptModule:
    """A scripted module whose forward(<tensor names>) checks `inputs`' envelope, then returns `traced(...)` as is.

    `inputs` are in `traced.forward`'s positional order; the guard keeps `traced`'s training flag and return type.
    """
    inputs = list(inputs)
    if not inputs:
        raise ValueError("a guard needs at least one input")
    arity = _positional_arity(traced)
    if arity is not None and arity != len(inputs):
        raise ValueError(f"the traced forward takes {arity} inputs, the envelope names {len(inputs)}")
    source = guard_source(inputs)
    with _SCRIPTING:
        # TorchScript compiles from source text, which it asks `inspect` for: the generated module's lines sit in
        # linecache under GUARD_FILE while it is scripted (no file on disk, and the same debug names every export).
        module = types.ModuleType(GUARD_MODULE)
        module.__file__ = GUARD_FILE
        previous_module = sys.modules.get(GUARD_MODULE)
        previous_lines = linecache.cache.get(GUARD_FILE)
        sys.modules[GUARD_MODULE] = module
        linecache.cache[GUARD_FILE] = (len(source), None, source.splitlines(keepends=True), GUARD_FILE)
        try:
            exec(compile(source, GUARD_FILE, "exec"), module.__dict__)
            guard = getattr(module, GUARD_CLASS)(traced)
            guard.train(getattr(traced, "training", False))  # a frozen module has no training flag (it is in eval)
            scripted: torch.jit.ScriptModule = torch.jit.script(guard)
        finally:
            if previous_module is None:
                sys.modules.pop(GUARD_MODULE, None)
            else:
                sys.modules[GUARD_MODULE] = previous_module
            if previous_lines is None:
                linecache.cache.pop(GUARD_FILE, None)
            else:
                linecache.cache[GUARD_FILE] = previous_lines
    return scripted


def read_envelope(module: torch.jit.ScriptModule) -> dict[str, Any] | None:
    """The envelope of a guarded module (loaded or not), or None when it has none (unguarded, or frozen without
    `preserved_attrs=["tsexport_envelope"]`)."""
    method = getattr(module, ENVELOPE_METHOD, None)
    if method is None:
        return None
    data: dict[str, Any] = json.loads(method())
    return data
