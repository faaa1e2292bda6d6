"""The trace stage (trace.py): the eager forward, strict tracing, dict outputs, targets, optimize."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from workerkit import GUIDE_TEXT, TINY_BERT, export_error, make_job, minilm_dir, random_ids, run_export


def test_an_exception_inside_forward_is_forward_failed(tmp_path: Path) -> None:
    # 14 tokens but only 8 position embeddings: BertModel.forward itself raises.
    config = {**TINY_BERT, "max_position_embeddings": 8}
    error = export_error(make_job(tmp_path, config=config))
    assert (error.code, error.stage) == ("forward_failed", "trace")
    assert error.message.startswith("the model's forward() failed")
    assert "Error" in error.message  # exception type and message
    assert "Traceback" in error.detail or "File" in error.detail


def test_a_wrong_input_dtype_is_forward_failed(tmp_path: Path) -> None:
    tensors = [{"name": "input_ids", "from": "random", "shape": [1, 14], "dtype": "float32"}]
    error = export_error(make_job(tmp_path, tensors=tensors))
    assert error.code == "forward_failed"


def test_strict_tracing_records_the_tracer_warnings_of_sdpa_attention_for_swift_to_judge(tmp_path: Path) -> None:
    # Measured: BertModel with sdpa attention on transformers 5.24 warns twice (a shape turned into a bool). The
    # worker decides nothing: under strict it records them; the Swift side fails the apply unless the artifact
    # matched at every envelope point.
    data = run_export(make_job(tmp_path, model={"attn_implementation": "sdpa"}, strict=True))
    assert len(data["tracer_warnings"]) == 2
    assert all("sdpa_attention.py" in w for w in data["tracer_warnings"])
    assert (tmp_path / "model.pt").exists()


def test_dict_outputs_under_strict_fail_when_torchscript_is_false(tmp_path: Path) -> None:
    error = export_error(make_job(tmp_path, model={"torchscript": False}, strict=True))
    assert (error.code, error.stage, error.field) == ("trace_failed", "trace", "spec.trace.strict")


def test_dict_outputs_trace_without_strict_when_torchscript_is_false(tmp_path: Path) -> None:
    from tsexport_worker.verify.verify import verify_bundle

    data = run_export(make_job(tmp_path, model={"torchscript": False}, check_shapes=[[1, 5]]))
    assert data["adjusted_config"] == {}
    assert isinstance(torch.jit.load(str(tmp_path / "model.pt"))(torch.tensor([[5, 6, 7]])), dict)
    assert verify_bundle(str(tmp_path), 1e-5, 1e-4)["passed"]


@pytest.mark.parametrize(("hardware", "package"), [("inf1", "torch-neuron"), ("inf2", "torch-neuronx")])
def test_neuron_targets_need_their_package(tmp_path: Path, hardware: str, package: str) -> None:
    from tsexport_worker.errors import WorkerError
    from tsexport_worker.export.export import export
    from tsexport_worker.protocol import parse_job

    stages: list[str] = []
    with pytest.raises(WorkerError) as caught:
        export(parse_job(make_job(tmp_path, hardware=hardware)), lambda s, status, ms: stages.append(s))
    error = caught.value
    assert (error.code, error.stage, error.field) == ("target_unavailable", "load", "spec.target.hardware")
    assert f"target {hardware} needs {package} in the Python runtime (pip install {package}" in error.message
    assert stages == []  # refused before the model is loaded


def test_cuda_target_follows_the_runtime(tmp_path: Path) -> None:
    from tsexport_worker.verify.verify import verify_bundle

    job = make_job(tmp_path, hardware="cuda")
    if torch.cuda.is_available():
        run_export(job)
        assert verify_bundle(str(tmp_path), 1e-5, 1e-4)["passed"]
    else:
        error = export_error(job)
        assert (error.code, error.field) == ("target_unavailable", "spec.target.hardware")
        assert "cuda" in error.message


@pytest.mark.parametrize("optimize", ["freeze", "optimize_for_inference"])
def test_optimized_modules_still_match(tmp_path: Path, optimize: str) -> None:
    from tsexport_worker.verify.verify import verify_bundle

    run_export(make_job(tmp_path, optimize=optimize, check_shapes=[[2, 9]]))
    result = verify_bundle(str(tmp_path), 1e-5, 1e-4)
    assert result["passed"], result


def test_strict_tracing_passes_where_no_tracer_warning_is_raised(tmp_path: Path) -> None:
    # Measured: with eager attention and no attention_mask, BertModel traces without any TracerWarning.
    from tsexport_worker.verify.verify import verify_bundle

    data = run_export(make_job(tmp_path, strict=True, check_shapes=[[2, 5]]))
    assert data["tracer_warnings"] == []
    assert data["attn_implementation"] == "eager"
    assert verify_bundle(str(tmp_path), 1e-5, 1e-4)["passed"]


def test_strict_tracing_with_an_attention_mask_warns_even_with_eager_attention(tmp_path: Path) -> None:
    tensors = [random_ids([1, 14]), {"name": "attention_mask", "from": "ones", "shape": [1, 14]}]
    data = run_export(make_job(tmp_path, tensors=tensors, strict=True))
    assert len(data["tracer_warnings"]) == 1 and "masking_utils.py" in data["tracer_warnings"][0]

