"""Deploy kind triton (deploy/triton.py): config.pbtxt checked with Triton's own ModelConfig parser."""

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
from deploykit import SMALL, TENSORS, bundle, deploy, deploy_error, record_of, sha256  # noqa: F401  (bundle: a fixture)

@pytest.fixture(scope="module")
def model_config_pb2() -> ModuleType:
    """Triton's ModelConfig protobuf as tritonclient ships it, loaded by path (importing tritonclient.grpc needs
    grpc)."""
    spec = importlib.util.find_spec("tritonclient")
    assert spec is not None and spec.submodule_search_locations, "pip install tritonclient"
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("tsexport_test_model_config_pb2", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def parse_config(pb2: ModuleType, path: Path) -> Any:
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), pb2.ModelConfig())


def test_triton_entry_matches_the_record(bundle: Path, tmp_path: Path, model_config_pb2: ModuleType) -> None:
    data = deploy("triton", bundle, tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == [
        "1/model.pt", "config.pbtxt",
    ]
    config = parse_config(model_config_pb2, tmp_path / "config.pbtxt")
    record = record_of(bundle)
    data_type = model_config_pb2.DataType.Name
    assert (config.name, config.platform, config.max_batch_size) == ("tiny-bert", "pytorch_libtorch", 0)
    expected_types = {"int64": "TYPE_INT64", "float32": "TYPE_FP32"}
    for entries, signature in ((config.input, record["input_signature"]), (config.output, record["output_signature"])):
        assert [e.name for e in entries] == [f"{s['name']}__{i}" for i, s in enumerate(signature)]
        assert [data_type(e.data_type) for e in entries] == [expected_types[s["dtype"]] for s in signature]
        assert [list(e.dims) for e in entries] == [s["shape"] for s in signature]
    assert [e.name for e in config.input] == ["input_ids__0", "token_type_ids__1"]
    assert [e.name for e in config.output] == ["last_hidden_state__0", "pooler_output__1"]
    assert [model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group] == ["KIND_CPU"]
    assert sha256(tmp_path / "1" / "model.pt") == record["model_sha256"] == data["model_sha256"]
    assert [e["record_name"] for e in data["inputs"]] == ["input_ids", "token_type_ids"]
    assert data["files"] == ["config.pbtxt", "1/model.pt"] and data["warnings"] == []

    # What the pytorch_libtorch backend checks at load: as many config inputs as forward() takes (self aside), and
    # inputs bound by their __<index>; run it that way and compare with the bundle's reference outputs.
    module = torch.jit.load(str(tmp_path / "1" / "model.pt"))
    assert len(module.forward.schema.arguments) - 1 == len(config.input)
    samples = load_file(str(bundle / "sample_inputs.safetensors"))
    references = load_file(str(bundle / "reference_outputs.safetensors"))
    by_index = sorted(config.input, key=lambda e: int(e.name.rsplit("__", 1)[1]))
    names = [s["name"] for s in record["input_signature"]]
    outputs = module(*[samples[f"traced/{names[int(e.name.rsplit('__', 1)[1])]}"] for e in by_index])
    for entry, tensor in zip(config.output, outputs, strict=True):
        index = int(entry.name.rsplit("__", 1)[1])
        torch.testing.assert_close(tensor, references[f"traced/output_{index}"])


def test_triton_batching_leaves_out_the_batch_dim_and_varies_checked_dims(
    bundle: Path, tmp_path: Path, model_config_pb2: ModuleType
) -> None:
    deploy("triton", bundle, tmp_path, max_batch_size=4, variable_dims=True)
    config = parse_config(model_config_pb2, tmp_path / "config.pbtxt")
    assert config.max_batch_size == 4
    assert [list(e.dims) for e in config.input] == [[-1], [-1]]  # sequence 8 traced, 5 checked
    assert [list(e.dims) for e in config.output] == [[-1, 32], [32]]


def test_triton_batching_without_variable_dims_keeps_the_traced_sequence(
    bundle: Path, tmp_path: Path, model_config_pb2: ModuleType
) -> None:
    deploy("triton", bundle, tmp_path, max_batch_size=2)
    config = parse_config(model_config_pb2, tmp_path / "config.pbtxt")
    assert [list(e.dims) for e in config.input] == [[8], [8]]
    assert [list(e.dims) for e in config.output] == [[8, 32], [32]]


def test_triton_names_keep_one_delimiter() -> None:
    from tsexport_worker.deploy import triton_name

    assert triton_name("hidden_states.0", 2) == "hidden_states_0__2"
    assert triton_name("a__b", 1) == "a_b__1"
    assert triton_name("__", 0) == "tensor__0"


class _Pair(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x.sum()


def fake_bundle(directory: Path, record: dict[str, Any]) -> Path:
    """A hand-made bundle: a traced two-output module and the given record (no record.json)."""
    directory.mkdir(parents=True, exist_ok=True)
    traced = torch.jit.trace(_Pair(), (torch.ones(3, 4),))
    torch.jit.save(traced, str(directory / "model.pt"), _extra_files={"tsexport/record.json": json.dumps(record)})
    return directory


FAKE = {
    "input_signature": [{"name": "x", "dtype": "float32", "shape": [3, 4]}],
    "output_signature": [
        {"name": "output_0", "dtype": "float32", "shape": [3, 4]},
        {"name": "output_1", "dtype": "float32", "shape": []},
    ],
    "target": {"hardware": "cpu", "optimize": "none", "device": "cpu"},
}


def test_triton_reads_the_embedded_record_and_reshapes_scalars(tmp_path: Path, model_config_pb2: ModuleType) -> None:
    source = fake_bundle(tmp_path / "bundle", FAKE)
    deploy("triton", source, tmp_path / "out")
    config = parse_config(model_config_pb2, tmp_path / "out" / "config.pbtxt")
    assert [list(e.dims) for e in config.output] == [[3, 4], [1]]
    assert config.output[1].HasField("reshape") and list(config.output[1].reshape.shape) == []


def test_triton_refuses_what_its_backend_cannot_serve(tmp_path: Path) -> None:
    cuda = fake_bundle(tmp_path / "cuda", {**FAKE, "target": {"hardware": "cuda", "device": "cuda"}})
    assert deploy("triton", cuda, tmp_path / "cuda-out")["instance_kind"] == "KIND_GPU"
    neuron = fake_bundle(tmp_path / "inf2", {**FAKE, "target": {"hardware": "inf2", "device": "cpu"}})
    error = deploy_error("triton", neuron, tmp_path / "inf2-out")
    assert (error.code, error.stage) == ("serialize_failed", "deploy") and "Neuron" in error.message
    nested = {**FAKE, "output_signature": [{"name": "hidden_states.0", "dtype": "float32", "shape": [3, 4]}]}
    error = deploy_error("triton", fake_bundle(tmp_path / "nested", nested), tmp_path / "nested-out")
    assert "nested tuples" in error.message and "hidden_states.0" in error.message
    error = deploy_error("triton", fake_bundle(tmp_path / "scalar", FAKE), tmp_path / "scalar-out", max_batch_size=2)
    assert error.code == "bad_request" and "output_1 has shape []" in error.message


def test_triton_warns_about_bfloat16(tmp_path: Path, model_config_pb2: ModuleType) -> None:
    record = {**FAKE, "output_signature": [{"name": "y", "dtype": "bfloat16", "shape": [3, 4]}]}
    data = deploy("triton", fake_bundle(tmp_path / "bf16", record), tmp_path / "out")
    config = parse_config(model_config_pb2, tmp_path / "out" / "config.pbtxt")
    assert model_config_pb2.DataType.Name(config.output[0].data_type) == "TYPE_BF16"
    assert [w["code"] for w in data["warnings"]] == ["bf16_io"]


def test_a_model_that_is_not_the_recorded_one_is_refused(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    copy.mkdir()
    for name in ("model.pt", "sample_inputs.safetensors", "reference_outputs.safetensors"):
        (copy / name).write_bytes((bundle / name).read_bytes())
    (copy / "record.json").write_text(json.dumps({**record_of(bundle), "model_sha256": "0" * 64}))
    error = deploy_error("triton", copy, tmp_path / "out")
    assert error.code == "serialize_failed" and "not the one its record states" in error.message
    (copy / "model.pt").unlink()
    assert "has no model.pt" in deploy_error("torchserve", copy, tmp_path / "out").message


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"kind": "directory"}, "`kind`"),
        ({"dest": "relative/dir"}, "`dest`"),
        ({"name": "../escape"}, "`name`"),
        ({"max_batch_size": -1}, "`max_batch_size`"),
        ({"max_batch_size": True}, "`max_batch_size`"),
        ({"variable_dims": "yes"}, "`variable_dims`"),
    ],
)
def test_bad_requests_name_the_field(fields: dict[str, Any], needle: str) -> None:
    from tsexport_worker.deploy import parse_deploy
    from tsexport_worker.errors import WorkerError

    body = {**deploy_request("triton", "/abs/bundle", "/abs/dest", name="m"), **fields}
    with pytest.raises(WorkerError) as caught:
        parse_deploy(body)
    assert caught.value.code == "bad_request" and needle in caught.value.message
    assert caught.value.field == needle.strip("`")


def test_deploy_over_the_protocol(bundle: Path, tmp_path: Path) -> None:
    worker = Worker()
    try:
        progress, triton = worker.request("deploy", **deploy_request("triton", bundle, tmp_path / "triton"))
        _, served = worker.request("deploy", **deploy_request("torchserve", bundle, tmp_path / "store"))
        _, bad = worker.request("deploy", **deploy_request("helm", bundle, tmp_path / "x", name="m"))
        _, probe = worker.request("probe")
    finally:
        assert worker.close() == 0
    assert [(p["stage"], p["status"]) for p in progress] == [("deploy", "start"), ("deploy", "done")]
    assert triton["type"] == "result" and triton["data"]["kind"] == "triton"
    assert triton["data"]["dest"] == str(tmp_path / "triton") and "deploy" in triton["data"]["timings_ms"]
    assert (tmp_path / "triton" / "config.pbtxt").is_file() and (tmp_path / "triton" / "1" / "model.pt").is_file()
    assert served["type"] == "result" and served["data"]["mar"] == "tiny-bert.mar"
    assert (tmp_path / "store" / "tiny-bert.mar").is_file()
    assert (bad["type"], bad["code"], bad["stage"]) == ("error", "bad_request", None)
    assert probe["type"] == "result"
    assert not (tmp_path / "x").exists()


def test_triton_aoti_entry_serves_model_pt2_by_position_at_batch_1(
    bundle: Path, tmp_path: Path, model_config_pb2: ModuleType
) -> None:
    # The deploy copies model.pt2's bytes; a stand-in file is enough for the config (the Swift end-to-end test
    # deploys a real AOTInductor package).
    package = bundle / "model.pt2"
    package.write_bytes(b"stand-in for an AOTInductor package")
    try:
        refused = deploy_error("triton", bundle, tmp_path / "batched", format="aoti", max_batch_size=4,
                               variable_dims=True)
        assert (refused.code, refused.field) == ("bad_request", "max_batch_size"), refused.message
        assert "batch 1 only" in refused.message and not (tmp_path / "batched").exists()
        dest = tmp_path / "aoti"
        unbatched = deploy_error("triton", bundle, tmp_path / "unbatched", format="aoti", batch_dim=None)
        assert (unbatched.code, unbatched.field) == ("bad_request", "batch_dim"), unbatched.message
        data = deploy("triton", bundle, dest, format="aoti", max_batch_size=0, batch_dim=1, variable_dims=True)
        assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == ["1/model.pt2", "config.pbtxt"]
        config = parse_config(model_config_pb2, dest / "config.pbtxt")
        # Triton's pytorch_backend README: PT2 archives serve batch 1 only for now (no batching): max_batch_size 0.
        assert (config.name, config.backend, config.platform, config.max_batch_size) == ("tiny-bert", "pytorch", "torch_aoti", 0)
        assert [e.name for e in config.input] == ["INPUT__0", "INPUT__1"]
        assert [e.name for e in config.output] == ["OUTPUT__0", "OUTPUT__1"]
        assert [list(e.dims) for e in config.input] == [[1, -1], [1, -1]], "batch 1, the checked sequence lengths vary"
        assert list(config.output[0].dims) == [1, -1, SMALL["hidden_size"]]
        assert sha256(dest / "1" / "model.pt2") == data["model_sha256"] == sha256(package)
        assert (data["platform"], data["max_batch_size"], data["files"]) == ("torch_aoti", 0, ["config.pbtxt", "1/model.pt2"])
    finally:
        package.unlink()


def test_triton_aoti_needs_the_package_and_only_triton_serves_it(bundle: Path, tmp_path: Path) -> None:
    error = deploy_error("triton", bundle, tmp_path / "a", format="aoti", max_batch_size=0, batch_dim=1)
    assert "model.pt2" in error.message and "spec.output.formats" in error.message
    error = deploy_error("torchserve", bundle, tmp_path / "b", format="aoti")
    assert (error.code, error.field) == ("bad_request", "format")


def test_the_plans_requests_export_verify_and_deploy_a_batched_triton_entry(
    tmp_path: Path, model_config_pb2: ModuleType
) -> None:
    """The tiny-bert fixture's export, verify_bundle and triton deploy requests, as `tsexport plan --json` gave them:
    the deploy writes the max_batch_size the plan states (the default envelope's batch maximum, 2) and leaves the
    batch dimension out."""
    import requestkit

    from tsexport_worker.deploy import deploy as run_deploy
    from tsexport_worker.deploy import parse_deploy
    from tsexport_worker.verify.verify import verify_bundle

    planned = requestkit.requests("tiny-bert", tmp_path)
    data = run_export(planned["export"]["job"])
    staging = Path(planned["export"]["job"]["staging_dir"])
    tolerance = planned["verify_bundle"]["tolerance"]
    verdict = verify_bundle(planned["verify_bundle"]["dir"], tolerance["atol"], tolerance["rtol"])
    assert verdict["passed"], verdict["cases"]
    record = {
        "fingerprint": "test",
        **{k: data[k] for k in ("model_class", "input_signature", "output_signature", "cases", "hardware", "device")},
        "model_sha256": sha256(staging / "model.pt"),
    }
    (staging / "record.json").write_text(json.dumps(record))
    triton = next(r for r in planned["deploy"] if r["kind"] == "triton")
    assert (triton["max_batch_size"], triton["variable_dims"]) == (2, True)
    result = run_deploy(parse_deploy(requestkit.body(triton)))
    config = parse_config(model_config_pb2, Path(triton["dest"]) / "config.pbtxt")
    assert (config.name, config.max_batch_size, result["max_batch_size"]) == ("tiny-bert", 2, 2)
    assert [list(e.dims) for e in config.input] == [[-1], [-1]], "batch left out, the sequence varies"
    assert [list(e.dims) for e in config.output] == [[-1, 32], [32]]
