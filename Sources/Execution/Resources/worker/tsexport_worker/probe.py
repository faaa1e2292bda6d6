"""What the Python runtime offers: versions, missing packages and hardware targets.

torch is imported here inside a try block (hello needs its version); transformers is only looked up, never imported,
so a process that only verifies bundles does not pay for it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import platform
from types import ModuleType
from typing import Any

from . import PROTOCOL_VERSION, WORKER_VERSION
from .errors import WorkerError, describe

# import name -> distribution name (what pip installs)
DISTRIBUTIONS = {"torch": "torch", "transformers": "transformers", "safetensors": "safetensors"}
TARGETS = ("cpu", "cuda", "inf1", "inf2")
NEURON_PACKAGES = {"inf1": ("torch_neuron", "torch-neuron"), "inf2": ("torch_neuronx", "torch-neuronx")}

_torch: ModuleType | None = None
_torch_error: str | None = None
_torch_tried = False
_transformers: ModuleType | None = None
_transformers_error: str | None = None


def try_import_torch() -> ModuleType | None:
    """Import torch once; remember why it failed (any exception: a broken wheel raises OSError, not ImportError)."""
    global _torch, _torch_error, _torch_tried
    if not _torch_tried:
        _torch_tried = True
        try:
            _torch = importlib.import_module("torch")
        except Exception as exc:  # noqa: BLE001 - every failure means "torch is unusable here"
            _torch_error = describe(exc)
    return _torch


def _spec_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_packages() -> list[str]:
    """Import names that are unusable: torch if its import failed, the others if they cannot be found."""
    missing = []
    if try_import_torch() is None:
        missing.append("torch")
    if _transformers_error is not None or not _spec_exists("transformers"):
        missing.append("transformers")
    if not _spec_exists("safetensors"):
        missing.append("safetensors")
    return missing


def distribution_version(import_name: str) -> str | None:
    try:
        return importlib.metadata.version(DISTRIBUTIONS.get(import_name, import_name))
    except importlib.metadata.PackageNotFoundError:
        return None


def require(*names: str) -> None:
    """Raise `missing_dependency` naming the first of `names` this runtime lacks (all of them in the message)."""
    missing = [name for name in missing_packages() if name in names]
    if missing:
        reason = f" (import torch failed: {_torch_error})" if "torch" in missing and _torch_error else ""
        raise WorkerError(
            None,
            "missing_dependency",
            f"the Python runtime lacks {', '.join(missing)}{reason}; install them "
            f"(pip install {' '.join(DISTRIBUTIONS[m] for m in missing)}) or let tsexport use its managed runtime",
            detail=_torch_error if "torch" in missing else _transformers_error,
        )


def import_transformers() -> ModuleType:
    """The lazily imported transformers module (first export only)."""
    global _transformers, _transformers_error
    if _transformers is None:
        require("torch")
        try:
            _transformers = importlib.import_module("transformers")
        except Exception as exc:  # noqa: BLE001
            _transformers_error = describe(exc)
            raise WorkerError(
                None,
                "missing_dependency",
                f"the Python runtime cannot import transformers ({_transformers_error}); "
                "install it (pip install transformers) or let tsexport use its managed runtime",
                detail=_transformers_error,
            ) from exc
    return _transformers


def torch_module() -> Any:
    require("torch")
    return _torch


def target_status(target: str) -> dict[str, Any]:
    """`{"available", "reason", "device"}` for one hardware target."""
    torch = try_import_torch()
    if torch is None:
        return {"available": False, "reason": "torch is not importable", "device": None}
    if target == "cpu":
        return {"available": True, "reason": None, "device": platform.processor() or platform.machine() or "cpu"}
    if target == "cuda":
        if not torch.cuda.is_available():
            built = getattr(torch.version, "cuda", None)
            why = "no CUDA device is visible" if built else f"torch {torch.__version__} was built without CUDA"
            return {"available": False, "reason": why, "device": None}
        return {"available": True, "reason": None, "device": torch.cuda.get_device_name(0)}
    if target in NEURON_PACKAGES:
        module, dist = NEURON_PACKAGES[target]
        if not _spec_exists(module):
            return {"available": False, "reason": f"{dist} is not installed", "device": None}
        return {"available": True, "reason": None, "device": target}
    return {"available": False, "reason": f"unknown target {target!r}", "device": None}


def require_target(target: str) -> None:
    """Raise `target_unavailable` before anything is loaded when the job's hardware cannot be used here."""
    status = target_status(target)
    if status["available"]:
        return
    if target in NEURON_PACKAGES:
        module, dist = NEURON_PACKAGES[target]
        api = "torch.neuron.trace" if target == "inf1" else "torch_neuronx.trace"
        message = (
            f"target {target} needs {dist} in the Python runtime (pip install {dist} "
            f"--extra-index-url=https://pip.repos.neuron.amazonaws.com), which provides {api}; {status['reason']}"
        )
    elif target == "cuda":
        message = f"target cuda is not available in this Python runtime: {status['reason']}"
    else:
        message = f"target {target} is not available: {status['reason']}"
    raise WorkerError(None, "target_unavailable", message, field="spec.target.hardware")


def versions() -> dict[str, str | None]:
    torch = try_import_torch()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__ if torch is not None else None,
        "transformers": (
            _transformers.__version__ if _transformers is not None else distribution_version("transformers")
        ),
        "safetensors": distribution_version("safetensors"),
        "worker": WORKER_VERSION,
    }


def hello_fields() -> dict[str, Any]:
    """The fields of `hello` (and of `probe`'s result)."""
    found = versions()
    return {
        "protocol": PROTOCOL_VERSION,
        "worker_version": WORKER_VERSION,
        "python": found["python"],
        "torch": found["torch"],
        "transformers": found["transformers"] if "transformers" not in missing_packages() else None,
        "missing": missing_packages(),
        "targets": {target: target_status(target) for target in TARGETS},
    }
