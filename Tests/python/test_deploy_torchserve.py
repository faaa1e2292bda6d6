"""Deploy kind torchserve (deploy/torchserve.py): the real archiver's .mar loaded by TorchServe's own loader."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import time
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from workerkit import TINY_BERT, Worker, make_job, run_export
from deploykit import SMALL, TENSORS, bundle, deploy, deploy_error, record_of, sha256  # noqa: F401  (bundle: a fixture)

@pytest.fixture(scope="module")
def mar(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    dest = tmp_path_factory.mktemp("model-store")
    data = deploy("torchserve", bundle, dest)
    return dest / "tiny-bert.mar", data


def test_mar_holds_the_bundles_module_and_a_manifest(bundle: Path, mar: tuple[Path, dict[str, Any]]) -> None:
    path, data = mar
    assert sorted(os.listdir(path.parent)) == ["tiny-bert.mar"]  # the archiver's scratch folder is gone
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
        serialized = archive.read(manifest["model"]["serializedFile"])
        signature = json.loads(archive.read("tsexport_signature.json"))
        names = set(archive.namelist())
    assert manifest["model"] == {
        "modelName": "tiny-bert", "serializedFile": "model.pt", "handler": "torchserve_handler.py",
        "modelVersion": "1.0",
    }
    assert manifest["archiverVersion"] == "0.12.0" == data["archiver_version"]
    # The archive states a fixed creation time; build.json gets the archiver's own (data["manifest"]).
    assert manifest["createdOn"] == "01/01/1980 00:00:00"
    assert {k: v for k, v in data["manifest"].items() if k != "createdOn"} == {k: v for k, v in manifest.items() if k != "createdOn"}
    assert data["files"] == ["tiny-bert.mar"]
    assert {"record.json", "torchserve_handler.py", "tsexport_signature.json"} <= names
    assert hashlib.sha256(serialized).hexdigest() == record_of(bundle)["model_sha256"] == data["model_sha256"]
    record = record_of(bundle)
    assert signature["input_signature"] == record["input_signature"]
    assert signature["output_signature"] == record["output_signature"]
    module = torch.jit.load(str(bundle / "model.pt"))
    extracted = path.parent.parent / "extracted-model.pt"
    extracted.write_bytes(serialized)
    assert str(torch.jit.load(str(extracted)).graph) == str(module.graph)


def test_the_same_bundle_archived_twice_at_different_times_gives_the_same_bytes(
    bundle: Path, mar: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    first, data = mar
    time.sleep(1.1)  # the archiver's createdOn has one-second resolution: a later second, a different clock time
    again = deploy("torchserve", bundle, tmp_path / "elsewhere")
    assert again["manifest"]["createdOn"] != data["manifest"]["createdOn"] or data["manifest"]["createdOn"] == ""
    assert (tmp_path / "elsewhere" / "tiny-bert.mar").read_bytes() == first.read_bytes()
    with zipfile.ZipFile(first) as archive:
        assert archive.testzip() is None
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_torchserve_loads_the_mar_and_the_handler_binds_inputs_by_name(
    bundle: Path, mar: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TorchServe's own backend path: the extracted .mar, ts.model_loader, the handler class, Service.predict."""
    from ts import service as ts_service
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
    from ts.model_loader import TsModelLoader

    with zipfile.ZipFile(mar[0]) as archive:
        archive.extractall(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torchserve_handler", raising=False)
    metrics_yaml = Path(ts_service.__file__).parent / "configs" / "metrics.yaml"
    manifest = json.loads((tmp_path / "MAR-INF" / "MANIFEST.json").read_text())
    service = TsModelLoader().load(
        "tiny-bert", str(tmp_path), manifest["model"]["handler"], None, 1,
        metrics_cache=MetricsCacheYamlImpl(str(metrics_yaml)),
    )
    answers: list[Any] = []
    monkeypatch.setattr(ts_service, "create_predict_response", lambda ret, ids, msg, code, *a, **k: answers.append(
        (ret, code, msg)))
    samples = load_file(str(bundle / "sample_inputs.safetensors"))
    references = load_file(str(bundle / "reference_outputs.safetensors"))
    # Keys in another order than the signature: binding is by name.
    bodies = [
        {name: samples[f"{case}/{name}"].tolist() for name in ("token_type_ids", "input_ids")}
        for case in ("traced", "check0")
    ]
    batch = [
        {"requestId": f"r{i}".encode(), "parameters": [
            {"name": "body", "value": json.dumps(body).encode(), "contentType": "application/json"}]}
        for i, body in enumerate(bodies)
    ]
    service.set_cl_socket(None)  # the backend worker sets its frontend socket after loading
    service.predict(batch)
    (ret, code, message), = answers
    assert code == 200, message
    for answer, case in zip(ret, ("traced", "check0"), strict=True):
        assert list(answer) == ["last_hidden_state", "pooler_output"]
        for i, name in enumerate(answer):
            torch.testing.assert_close(torch.tensor(answer[name]), references[f"{case}/output_{i}"])

    handler = service._entry_point.__self__
    with pytest.raises(ValueError, match="missing token_type_ids; unknown input"):
        handler.tensors({"input_ids": [[1, 2]], "input": [[1]]})
    with pytest.raises(ValueError, match="input input_ids has 1 dimensions; the model takes 2"):
        handler.tensors({"input_ids": [1, 2], "token_type_ids": [[0, 0]]})


def test_torchserve_needs_the_archiver(bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tsexport_worker.deploy import torchserve as deploy_module

    real = importlib.util.find_spec
    monkeypatch.setattr(
        deploy_module.importlib.util, "find_spec", lambda name, *a: None if name == "model_archiver" else real(name, *a)
    )
    error = deploy_error("torchserve", bundle, tmp_path)
    assert (error.code, error.stage) == ("missing_dependency", "deploy")
    assert "pip install torch-model-archiver" in error.message


def test_an_archiver_failure_is_reported_with_its_output(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tsexport_worker.deploy import torchserve as deploy_module

    monkeypatch.setattr(deploy_module, "ARCHIVER_MODULE", "model_archiver.no_such_module")
    error = deploy_error("torchserve", bundle, tmp_path)
    assert (error.code, error.stage) == ("serialize_failed", "deploy")
    assert error.message.startswith("torch-model-archiver failed: ") and "no_such_module" in error.message
    assert "--serialized-file" in error.detail
