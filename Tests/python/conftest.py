"""pytest setup for the Python worker: the hub offline, a `slow` marker.

`tsexport_worker` is imported as installed (scripts/test runs `pip install -e Sources/Execution/Resources/worker`);
pytest puts this folder on sys.path for the helpers (workerkit, deploykit, doubles) because it has no __init__.py.
"""

from __future__ import annotations

import os

import pytest

# The model hubs are unreachable here; the worker's hub code path stays intact (nothing is forced in the worker).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: a bigger model (the guide's BERT-base); runs by default, select with -m slow / -m 'not slow'"
    )
    # torch 2.13 deprecates torch.jit.* (the product is TorchScript); keep the test summary readable.
    config.addinivalue_line("filterwarnings", r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")
