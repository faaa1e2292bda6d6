"""A double of `torch_neuronx` (AWS Neuron SDK for Inf2/Trn1), installed as sys.modules["torch_neuronx"] in tests.

Mirrors the signature of the real `torch_neuronx.trace(func, example_inputs, *_, input_output_aliases={},
compiler_workdir=None, compiler_args=None, partitioner_config=None, inline_weights_to_neff=True,
cpu_backend=False)` (Neuron docs, torch-neuronx tracing API for inference); it records each
call and returns `torch.jit.trace(func, example_inputs)`, a real TorchScript module, so the rest of the export runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

IS_DOUBLE = True


@dataclass
class Call:
    func: Any
    example_inputs: Any
    kwargs: dict[str, Any] = field(default_factory=dict)


calls: list[Call] = []


def reset() -> None:
    calls.clear()


def trace(
    func: Any,
    example_inputs: Any,
    *_: Any,
    input_output_aliases: dict[Any, Any] | None = None,
    compiler_workdir: str | None = None,
    compiler_args: Any = None,
    partitioner_config: Any = None,
    inline_weights_to_neff: bool = True,
    cpu_backend: bool = False,
) -> torch.jit.ScriptModule:
    calls.append(Call(func, example_inputs, {"compiler_workdir": compiler_workdir, "compiler_args": compiler_args}))
    example = tuple(example_inputs) if isinstance(example_inputs, (list, tuple)) else (example_inputs,)
    return torch.jit.trace(func, example, check_trace=False)
