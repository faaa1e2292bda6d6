"""pytest setup for the Python worker: the worker folder on sys.path, the hub offline, a `slow` marker."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

WORKER_DIR = Path(__file__).resolve().parents[2] / "Sources" / "Execution" / "Resources" / "worker"
sys.path.insert(0, str(WORKER_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parent))
# The model hubs are unreachable here; the worker's hub code path stays intact (nothing is forced in the worker).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: a bigger model (the guide's BERT-base); runs by default, select with -m slow / -m 'not slow'"
    )
    # torch 2.13 deprecates torch.jit.* (the product is TorchScript); keep the test summary readable.
    config.addinivalue_line("filterwarnings", r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")
