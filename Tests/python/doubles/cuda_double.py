"""A double of the parts of `torch.cuda` / `torch.version` that the worker's probe reads, for a machine without a GPU.

`install(monkeypatch, ...)` patches `torch.cuda.is_available`, `torch.cuda.get_device_name` and `torch.version.cuda`
for one test. It cannot make tensors move to a device: an export on target cuda is not run with it.
"""

from __future__ import annotations

from typing import Any

import torch

IS_DOUBLE = True
DEVICE_NAME = "NVIDIA H200 (cuda double)"


def install(monkeypatch: Any, available: bool | Exception, built: str | None = "12.6") -> list[str]:
    """Patch torch for one test; returns the log of calls the probe made."""
    log: list[str] = []

    def is_available() -> bool:
        log.append("is_available")
        if isinstance(available, Exception):
            raise available
        return available

    def get_device_name(device: Any = None) -> str:
        log.append(f"get_device_name({device})")
        return DEVICE_NAME

    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    monkeypatch.setattr(torch.cuda, "get_device_name", get_device_name)
    monkeypatch.setattr(torch.version, "cuda", built)
    return log
