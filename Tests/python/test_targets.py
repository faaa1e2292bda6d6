"""Hardware targets: what hello reports (with a reason that says what to install), refusals before any model is
loaded, and the Neuron trace calls — checked against test doubles named as such (Tests/python/doubles).

Contract-tested only: the doubles stand in for torch-neuron / torch-neuronx and a CUDA device, so these tests pin
the API names, arguments and refusals the worker uses, not what the Neuron compiler or a GPU then do.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from doubles import cuda_double, torch_neuron_double, torch_neuronx_double
from workerkit import TINY_BERT, Worker, make_job, run_export

TENSORS = [
    {"name": "input_ids", "from": "random", "shape": [1, 6], "low": 3},
    {"name": "token_type_ids", "from": "zeros", "shape": [1, 6]},
]
SMALL = {**TINY_BERT, "num_hidden_layers": 1}


@pytest.fixture
def neuronx(monkeypatch: pytest.MonkeyPatch) -> Any:
    """torch_neuronx_double installed as `torch_neuronx` for one test."""
    torch_neuronx_double.reset()
    monkeypatch.setitem(sys.modules, "torch_neuronx", torch_neuronx_double)
    return torch_neuronx_double


@pytest.fixture
def neuron(monkeypatch: pytest.MonkeyPatch) -> Any:
    """torch_neuron_double installed as `torch_neuron`, and as `torch.neuron` (what importing the real one does)."""
    torch_neuron_double.reset()
    monkeypatch.setitem(sys.modules, "torch_neuron", torch_neuron_double)
    monkeypatch.setattr(torch, "neuron", torch_neuron_double, raising=False)
    return torch_neuron_double


# ---------------------------------------------------------------------------------------------------------------
# What hello says


def test_hello_gives_every_unavailable_target_a_reason_that_says_what_to_install() -> None:
    worker = Worker()
    try:
        targets = worker.hello["targets"]
        _, probe = worker.request("probe")
    finally:
        worker.close()
    assert set(targets) == {"cpu", "cuda", "inf1", "inf2"}
    assert targets["cpu"]["available"] is True and targets["cpu"]["reason"] is None
    for name, entry in targets.items():
        assert set(entry) == {"available", "reason", "device"}
        assert entry["available"] or (isinstance(entry["reason"], str) and entry["reason"].startswith(f"target {name}"))
    assert targets["inf2"]["reason"].startswith(
        "target inf2 needs torch-neuronx in the Python runtime (pip install torch-neuronx --extra-index-url="
    )
    assert "AWS Inf2/Trn1 instances with the Neuron SDK" in targets["inf2"]["reason"]
    assert "torch_neuronx.trace" in targets["inf2"]["reason"]
    assert targets["inf1"]["reason"].startswith("target inf1 needs torch-neuron in the Python runtime (pip install")
    assert "torch.neuron.trace" in targets["inf1"]["reason"]
    if not torch.cuda.is_available():
        assert "target cuda needs" in targets["cuda"]["reason"]
    assert probe["data"]["targets"] == targets
    assert worker.hello["deploy"]["triton"] == {"available": True, "reason": None}
    assert worker.hello["deploy"]["torchserve"] == {"available": True, "reason": None}


@pytest.mark.parametrize(
    ("built", "expected"),
    [(None, "was built without CUDA"), ("12.6", "was built with CUDA 12.6 but torch.cuda.is_available() is false")],
)
def test_cuda_reason_tells_a_cpu_build_from_a_missing_device(
    monkeypatch: pytest.MonkeyPatch, built: str | None, expected: str
) -> None:
    from tsexport_worker.runtime import probe

    log = cuda_double.install(monkeypatch, available=False, built=built)
    status = probe.target_status("cuda")
    assert status["available"] is False and status["device"] is None
    assert status["reason"].startswith("target cuda needs") and expected in status["reason"]
    assert log == ["is_available"]


def test_cuda_double_visible_device_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from tsexport_worker.runtime import probe

    log = cuda_double.install(monkeypatch, available=True)
    assert probe.target_status("cuda") == {"available": True, "reason": None, "device": cuda_double.DEVICE_NAME}
    assert log == ["is_available", "get_device_name(0)"]
    probe.require_target("cuda")  # no refusal


def test_a_cuda_runtime_that_raises_is_a_reason_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    from tsexport_worker.runtime import probe

    cuda_double.install(monkeypatch, available=RuntimeError("CUDA driver initialization failed"))
    status = probe.target_status("cuda")
    assert status["available"] is False
    assert "CUDA driver initialization failed" in status["reason"]


def test_neuron_doubles_make_their_targets_available(neuron: Any, neuronx: Any) -> None:
    from tsexport_worker.runtime import probe

    fields = probe.hello_fields()
    assert fields["targets"]["inf1"] == {"available": True, "reason": None, "device": "inf1"}
    assert fields["targets"]["inf2"] == {"available": True, "reason": None, "device": "inf2"}


# ---------------------------------------------------------------------------------------------------------------
# Refusals before any model is loaded


@pytest.mark.parametrize("hardware", ["inf1", "inf2", "cuda"])
def test_missing_target_is_refused_before_loading_with_hellos_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hardware: str
) -> None:
    from tsexport_worker.export import export as export_module
    from tsexport_worker.runtime import probe
    from tsexport_worker.errors import WorkerError
    from tsexport_worker.protocol import parse_job

    if hardware == "cuda":
        cuda_double.install(monkeypatch, available=False, built=None)
    loaded: list[Any] = []
    monkeypatch.setattr(export_module, "load_model", lambda spec: loaded.append(spec))
    stages: list[str] = []
    staging = tmp_path / "staging"
    with pytest.raises(WorkerError) as caught:
        export_module.export(parse_job(make_job(staging, hardware=hardware)), lambda s, st, ms: stages.append(s))
    error = caught.value
    assert (error.code, error.stage, error.field) == ("target_unavailable", "load", "spec.target.hardware")
    assert error.message == probe.target_status(hardware)["reason"]
    assert error.message.startswith(f"target {hardware} needs ")
    assert loaded == [] and stages == []
    assert not staging.exists()  # nothing left behind


def test_worker_process_refuses_inf2_without_progress(tmp_path: Path) -> None:
    worker = Worker()
    try:
        progress, error = worker.request("export", job=make_job(tmp_path / "staging", hardware="inf2"))
        reason = worker.hello["targets"]["inf2"]["reason"]
    finally:
        worker.close()
    assert progress == []
    assert (error["type"], error["code"], error["stage"], error["field"]) == (
        "error", "target_unavailable", "load", "spec.target.hardware",
    )
    assert error["message"] == reason
    assert not (tmp_path / "staging").exists()


# ---------------------------------------------------------------------------------------------------------------
# The Neuron paths call the real API names with the keyword-binding wrapper and the positional tensors


def _check_wrapper_call(call: Any, tensors: Any, staging: Path) -> None:
    from safetensors.torch import load_file
    from tsexport_worker.export.export import ForwardWrapper

    assert isinstance(call.func, ForwardWrapper)
    assert call.func.names == ["input_ids", "token_type_ids"]
    assert call.func.tuple_outputs is True
    assert [tuple(t.shape) for t in tensors] == [(1, 6), (1, 6)]
    samples = load_file(str(staging / "sample_inputs.safetensors"))
    assert torch.equal(tensors[0], samples["traced/input_ids"])
    assert torch.equal(tensors[1], samples["traced/token_type_ids"])


def test_inf2_traces_through_torch_neuronx_trace(tmp_path: Path, neuronx: Any) -> None:
    data = run_export(make_job(tmp_path, config=SMALL, tensors=TENSORS, hardware="inf2"))
    assert len(neuronx.calls) == 1
    call = neuronx.calls[0]
    assert isinstance(call.example_inputs, tuple)  # torch_neuronx.trace(func, example_inputs): a tuple, positional
    _check_wrapper_call(call, call.example_inputs, tmp_path)
    assert (data["hardware"], data["device"]) == ("inf2", "cpu")
    extra = {"tsexport/record.json": ""}
    torch.jit.load(str(tmp_path / "model.pt"), _extra_files=extra)
    target = json.loads(extra["tsexport/record.json"])["target"]
    assert target == {"hardware": "inf2", "optimize": "none", "device": "cpu", "quantize": "none"}


def test_inf1_traces_through_torch_neuron_trace(tmp_path: Path, neuron: Any) -> None:
    data = run_export(make_job(tmp_path, config=SMALL, tensors=TENSORS, hardware="inf1"))
    assert len(neuron.calls) == 1
    call = neuron.calls[0]
    assert isinstance(call.example_inputs, list)  # torch.neuron.trace(model, example_inputs=[...])
    _check_wrapper_call(call, call.example_inputs, tmp_path)
    assert (data["hardware"], data["device"]) == ("inf1", "cpu")


def test_neuron_double_is_not_called_for_cpu(tmp_path: Path, neuronx: Any) -> None:
    run_export(make_job(tmp_path, config=SMALL, tensors=TENSORS, hardware="cpu"))
    assert neuronx.calls == []
