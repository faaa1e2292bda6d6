"""The deploy op: place a verified bundle where a serving system expects it.

- `triton` (triton.py): a Triton model repository entry, `dest/config.pbtxt` and `dest/1/model.pt`, for the
  `pytorch_libtorch` backend, typed and shaped from the bundle's record.
- `torchserve` (torchserve.py): `dest/<name>.mar`, made by the real `torch-model-archiver` (run as an argv array in
  this interpreter) with `torchserve_handler.py`, which feeds the bundle's input signature to the TorchScript module.

The Swift side decides (kind, name, max_batch_size, variable dims, version), stages `dest` and moves it into place;
this package writes into `dest` only. Needs neither torch nor transformers: the record is read with bundle.read_record
(the bundle's `record.json` over `model.pt`'s zip entry), shapes from the safetensors headers.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from ..errors import WorkerError, describe, traceback_tail
from ..protocol import ProgressFn, no_progress
from .common import STAGE, DeployRequest, parse_deploy, read_bundle
from .torchserve import deploy_torchserve
from .triton import deploy_triton, triton_name

__all__ = ["DeployRequest", "deploy", "parse_deploy", "triton_name"]


@contextlib.contextmanager
def _stage(progress: ProgressFn, timings: dict[str, int]) -> Iterator[None]:
    progress(STAGE, "start", None)
    started = time.perf_counter()
    try:
        yield
    except WorkerError as error:
        error.stage = error.stage or STAGE
        raise
    except Exception as exc:  # answered as `internal`, the worker goes on
        raise WorkerError(STAGE, "internal", describe(exc), detail=traceback_tail(exc)) from exc
    timings[STAGE] = round((time.perf_counter() - started) * 1000)
    progress(STAGE, "done", timings[STAGE])


def deploy(request: DeployRequest, progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Write the deploy of `request.bundle` into `request.dest`; returns the protocol's `result.data`."""
    timings: dict[str, int] = {}
    with _stage(progress, timings):
        bundle = read_bundle(request.bundle)
        data = deploy_triton(bundle, request) if request.kind == "triton" else deploy_torchserve(bundle, request)
    data["name"] = request.name
    data["dest"] = request.dest
    data["timings_ms"] = timings
    return data
