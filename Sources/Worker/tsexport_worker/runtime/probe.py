"""What the Python runtime offers: versions, missing packages and hardware targets.

torch is imported here inside a try block (hello needs its version); transformers is only looked up, never imported,
so a process that only verifies bundles does not pay for it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
from types import ModuleType
from typing import Any

from .. import PROTOCOL_VERSION, WORKER_VERSION
from ..errors import WorkerError, describe

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
        except Exception as exc:
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


NEURON_APIS = {"inf1": "torch.neuron.trace", "inf2": "torch_neuronx.trace"}
NEURON_INSTANCES = {
    "inf1": "only on AWS Inf1 instances with the Neuron SDK; torch-neuron brings its own torch 1.x",
    "inf2": "only on AWS Inf2/Trn1 instances with the Neuron SDK",
}
NEURON_INDEX = "https://pip.repos.neuron.amazonaws.com"


def _unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason, "device": None}


def neuron_reason(target: str) -> str:
    """Why a Neuron target is missing and what to install, as one sentence that names the target."""
    _, dist = NEURON_PACKAGES[target]
    return (
        f"target {target} needs {dist} in the Python runtime (pip install {dist} --extra-index-url={NEURON_INDEX}; "
        f"{NEURON_INSTANCES[target]}), which provides {NEURON_APIS[target]}; {dist} is not installed"
    )


def cuda_reason(torch: Any) -> str:
    """Why target cuda is missing: a CPU-only torch build, or a CUDA build that sees no device."""
    built = getattr(torch.version, "cuda", None)
    if not built:
        return (
            f"target cuda needs a CUDA build of torch and a visible NVIDIA GPU: torch {torch.__version__} was built "
            "without CUDA (install a CUDA build of torch, on a machine with an NVIDIA GPU and its driver)"
        )
    return (
        f"target cuda needs a visible NVIDIA GPU: torch {torch.__version__} was built with CUDA {built} but "
        "torch.cuda.is_available() is false (no device, or no driver: check nvidia-smi and CUDA_VISIBLE_DEVICES)"
    )


def target_status(target: str) -> dict[str, Any]:
    """`{"available", "reason", "device"}` for one hardware target; `reason` says what to install or fix."""
    torch = try_import_torch()
    if torch is None:
        return _unavailable(
            f"target {target} needs torch, which cannot be imported ({_torch_error or 'not installed'}); install the "
            "pinned torch or let tsexport use its managed runtime"
        )
    if target == "cpu":
        return {"available": True, "reason": None, "device": platform.processor() or platform.machine() or "cpu"}
    if target == "cuda":
        try:
            available = bool(torch.cuda.is_available())
        except Exception as exc:  # noqa: BLE001 - a broken driver raises instead of answering False
            return _unavailable(
                f"target cuda needs a working CUDA runtime: torch.cuda.is_available() raised {describe(exc)}"
            )
        if not available:
            return _unavailable(cuda_reason(torch))
        return {"available": True, "reason": None, "device": torch.cuda.get_device_name(0)}
    if target in NEURON_PACKAGES:
        module, _ = NEURON_PACKAGES[target]
        if not _spec_exists(module):
            return _unavailable(neuron_reason(target))
        return {"available": True, "reason": None, "device": target}
    return _unavailable(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")


def require_target(target: str) -> None:
    """Raise `target_unavailable` before anything is loaded when the job's hardware cannot be used here.

    The message is the target's `reason` from hello, which names the target and what to install.
    """
    status = target_status(target)
    if status["available"]:
        return
    raise WorkerError(None, "target_unavailable", str(status["reason"]), field="spec.target.hardware")


def deploy_status() -> dict[str, dict[str, Any]]:
    """What the deploy op can do here: triton needs nothing beyond Python; torchserve needs torch-model-archiver."""
    torchserve: dict[str, Any] = {"available": True, "reason": None}
    if not _spec_exists("model_archiver"):
        torchserve = {
            "available": False,
            "reason": "deploy kind torchserve needs torch-model-archiver in the Python runtime "
            "(pip install torch-model-archiver; tsexport's managed runtime has it)",
        }
    return {"triton": {"available": True, "reason": None}, "torchserve": torchserve}


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
        "deploy": deploy_status(),
        "package_files": package_files(),
    }


def package_files() -> list[str]:
    """Files whose size and modification time change when torch or transformers is reinstalled or upgraded: the
    Swift side stamps them to know, without starting Python, whether the versions it remembers still hold."""
    files: list[str] = []
    for name in ("torch", "transformers", "safetensors"):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin:
            files.append(spec.origin)
            version_file = os.path.join(os.path.dirname(spec.origin), "version.py")
            if os.path.exists(version_file):
                files.append(version_file)
    return files
