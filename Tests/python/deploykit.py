"""What the deploy tests share: a tiny two-input BERT bundle with a record.json as the Swift side writes it, and
full deploy requests."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from workerkit import TINY_BERT, Worker, deploy_request, make_job, run_export


TENSORS = [
    {"name": "input_ids", "from": "random", "shape": [1, 8], "low": 3},
    {"name": "token_type_ids", "from": "zeros", "shape": [1, 8]},
]


SMALL = {**TINY_BERT, "num_hidden_layers": 1}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT bundle (two inputs, checked at [2, 5]) with a record.json as the Swift side writes it."""
    directory = tmp_path_factory.mktemp("bundle")
    data = run_export(make_job(directory, config=SMALL, tensors=TENSORS, check_shapes=[[2, 5]]))
    record = {
        "fingerprint": "test",
        **{k: data[k] for k in ("model_class", "input_signature", "output_signature", "cases", "hardware", "device")},
        "model_sha256": sha256(directory / "model.pt"),
        "model_bytes": (directory / "model.pt").stat().st_size,
    }
    (directory / "record.json").write_text(json.dumps(record))
    return directory


def deploy(kind: str, bundle: Path, dest: Path, **fields: Any) -> dict[str, Any]:
    from tsexport_worker.deploy import deploy as run
    from tsexport_worker.deploy import parse_deploy

    return run(parse_deploy(deploy_request(kind, bundle, dest, **fields)))


def deploy_error(kind: str, bundle: Path, dest: Path, **fields: Any) -> Any:
    from tsexport_worker.errors import WorkerError

    with pytest.raises(WorkerError) as caught:
        deploy(kind, bundle, dest, **fields)
    return caught.value


def record_of(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "record.json").read_text())
