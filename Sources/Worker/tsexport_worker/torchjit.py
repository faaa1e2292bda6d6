"""Typed doors to the parts of torch.jit whose annotations are partial (torch.jit.load and torch.jit.trace are
untyped; TracerWarning is not re-exported), so the rest of the worker type-checks under mypy --strict."""

from __future__ import annotations

from typing import Any, cast

import torch

TracerWarning: type[Warning] = cast("type[Warning]", torch.jit.TracerWarning)  # type: ignore[attr-defined]


def load(path: str, device: str) -> torch.jit.ScriptModule:
    """torch.jit.load onto `device`, in eval mode."""
    module = torch.jit.load(path, map_location=device)  # type: ignore[no-untyped-call]
    module.eval()
    return cast(torch.jit.ScriptModule, module)


def trace(module: torch.nn.Module, example: tuple[torch.Tensor, ...], strict: bool) -> torch.jit.ScriptModule:
    """torch.jit.trace without the tracer's own re-check (the worker checks every case against eager itself)."""
    traced: Any = torch.jit.trace(module, example, strict=strict, check_trace=False)  # type: ignore[no-untyped-call]
    return cast(torch.jit.ScriptModule, traced)
