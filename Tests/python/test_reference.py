"""The reference stage (reference.py): inputs remade per check shape as the contract says, eager references per case."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from workerkit import TINY_BERT, TINY_GPT2, make_job, random_ids, run_export


def _verify(staging: Path, atol: float = 1e-5, rtol: float = 1e-4) -> dict:
    from tsexport_worker.verify import verify_bundle

    return verify_bundle(str(staging), atol, rtol)


def test_cases_are_recorded_shape_by_shape(tmp_path: Path) -> None:
    tensors = [
        random_ids([1, 14]),
        {"name": "token_type_ids", "from": "values", "values": [[0] * 7 + [1] * 7]},
        {"name": "attention_mask", "from": "ones", "shape": [1, 14]},
    ]
    data = run_export(make_job(tmp_path, tensors=tensors, check_shapes=[[1, 7], [3, 30]]))
    assert data["cases"] == [
        {"case": "traced", "shape": [1, 14]}, {"case": "check0", "shape": [1, 7]}, {"case": "check1", "shape": [3, 30]},
    ]
    samples = load_file(str(tmp_path / "sample_inputs.safetensors"))
    references = load_file(str(tmp_path / "reference_outputs.safetensors"))
    assert samples["check1/input_ids"].shape == (3, 30)
    assert samples["check1/attention_mask"].eq(1).all()  # ones stay ones
    assert set(samples["check1/token_type_ids"].unique().tolist()) <= {0, 1}  # drawn from the traced values
    assert samples["check1/input_ids"].max() < TINY_BERT["vocab_size"]
    assert references["check1/output_0"].shape == (3, 30, 32)
    assert references["check0/output_1"].shape == (1, 32)
    result = _verify(tmp_path)
    assert [(c["case"], c["shape"], c["passed"]) for c in result["cases"]] == [
        ("traced", [1, 14], True), ("check0", [1, 7], True), ("check1", [3, 30], True),
    ]


def test_check_inputs_are_reproducible(tmp_path: Path) -> None:
    for name in ("a", "b"):
        run_export(make_job(tmp_path / name, check_shapes=[[2, 9]]))
    a = load_file(str(tmp_path / "a" / "sample_inputs.safetensors"))
    b = load_file(str(tmp_path / "b" / "sample_inputs.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra = load_file(str(tmp_path / "a" / "reference_outputs.safetensors"))
    rb = load_file(str(tmp_path / "b" / "reference_outputs.safetensors"))
    assert all(torch.equal(ra[k], rb[k]) for k in ra)  # same seed, same random weights


def test_a_shape_the_eager_model_refuses_is_recorded_not_fatal(tmp_path: Path) -> None:
    data = run_export(make_job(tmp_path, check_shapes=[[1, 80]]))  # 80 > max_position_embeddings 64
    assert data["cases"][1]["case"] == "check0"
    assert "the eager model refuses it at shape [1, 80]" in data["cases"][1]["rejected_by_model"]
    case = _verify(tmp_path)["cases"][1]
    assert case["passed"] is False and "error" not in case
    assert case["rejected_by_model"] == data["cases"][1]["rejected_by_model"]
