"""verify_bundle (verify.py): per-case parity of the saved module, failed cases, the comparison formula."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from workerkit import TINY_BERT, TINY_GPT2, make_job, random_ids, run_export


def _verify(staging: Path, atol: float = 1e-5, rtol: float = 1e-4) -> dict:
    from tsexport_worker.verify.verify import verify_bundle

    return verify_bundle(str(staging), atol, rtol)


def test_a_trace_that_cannot_run_at_another_shape_fails_that_case_only(tmp_path: Path) -> None:
    # Measured: GPT-2 traced at batch 1 without an attention mask bakes the batch size into its mask code, so the
    # saved program raises at batch 2, while another sequence length at batch 1 works.
    data = run_export(make_job(tmp_path, "GPT2LMHeadModel", TINY_GPT2, check_shapes=[[1, 7], [2, 20]]))
    assert len(data["cases"]) == 3
    result = _verify(tmp_path)
    traced, same_batch, other_batch = result["cases"]
    assert traced["passed"] and same_batch["passed"]
    assert other_batch["passed"] is False
    assert other_batch["max_abs_error"] is None
    assert "RuntimeError" in other_batch["error"] and "out of bounds" in other_batch["error"]
    assert result["passed"] is False


def test_a_corrupted_sample_fails_its_case_without_crashing(tmp_path: Path) -> None:
    run_export(make_job(tmp_path, check_shapes=[[1, 7], [2, 5]]))
    path = tmp_path / "sample_inputs.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    samples = load_file(str(path))
    samples["check0/input_ids"] = torch.zeros(1, 2, 3, 4, dtype=torch.float32)
    save_file(samples, str(path), metadata=metadata)
    cases = _verify(tmp_path)["cases"]
    assert [c["passed"] for c in cases] == [True, False, True]
    assert cases[1]["error"]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_models_export_and_verify(tmp_path: Path, dtype: str) -> None:
    data = run_export(make_job(tmp_path, model={"dtype": dtype}, check_shapes=[[2, 9]]))
    assert data["output_signature"][0]["dtype"] == dtype
    assert load_file(str(tmp_path / "reference_outputs.safetensors"))["check0/output_0"].dtype == getattr(torch, dtype)
    assert _verify(tmp_path, 1e-2, 1e-2)["passed"]


@pytest.mark.parametrize(
    ("actual", "expected", "passed"),
    [
        (1.0 + 1.05e-4, 1.0, True),  # |a - e| <= atol + rtol * |e| = 1.1e-4
        (1.0 + 1.2e-4, 1.0, False),
        (float("nan"), float("nan"), True),
        (float("nan"), 1.0, False),
        (5e-6, 0.0, True),
    ],
)
def test_compare_follows_the_protocol_formula(actual: float, expected: float, passed: bool) -> None:
    from tsexport_worker.verify.verify import compare

    abs_error, rel_error, ok = compare(
        torch.tensor([actual], dtype=torch.float64), torch.tensor([expected], dtype=torch.float64), 1e-5, 1e-4
    )
    assert ok is passed
    if expected != 0 and actual == actual:
        assert abs_error == pytest.approx(abs(actual - expected))
        assert rel_error == pytest.approx(abs(actual - expected) / abs(expected))
