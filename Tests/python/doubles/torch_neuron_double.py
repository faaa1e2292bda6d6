"""A double of `torch_neuron` (AWS Neuron SDK for Inf1), installed as sys.modules["torch_neuron"] in tests.

Importing the real package registers the `torch.neuron` namespace; a test sets `torch.neuron` to this module. Mirrors
the documented `torch_neuron.trace(model, example_inputs, **kwargs)` (also reached as `torch.neuron.trace`); it
records each call and returns `torch.jit.trace(model, example_inputs)`, a real TorchScript module, so the rest of the
export runs.
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


def trace(model: Any, example_inputs: Any, **kwargs: Any) -> torch.jit.ScriptModule:
    calls.append(Call(model, example_inputs, dict(kwargs)))
    example = tuple(example_inputs) if isinstance(example_inputs, (list, tuple)) else (example_inputs,)
    return torch.jit.trace(model, example, check_trace=False)
