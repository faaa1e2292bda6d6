"""The envelope in the worker (envelope.py): points remade per axis with padded masks, the guard around the trace,
the `guard` op that narrows it, and decoder_* inputs with a length of their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from workerkit import TINY_BERT, TINY_GPT2, Worker, make_job, random_ids, run_export


def envelope(axes: list[tuple[str, int, int | None]], tensors: dict[str, list[str | None]],
             points: list[tuple[str, dict[str, int | None]]], pad_masks: bool = False) -> dict[str, Any]:
    return {
        "axes": [{"name": n, "min": lo, "max": hi} for n, lo, hi in axes],
        "tensors": [{"name": n, "axes": a} for n, a in tensors.items()],
        "points": [{"case": c, "sizes": s} for c, s in points],
        "pad_masks": pad_masks,
    }


def _verify(staging: Path) -> dict[str, Any]:
    from tsexport_worker.verify.verify import verify_bundle

    return verify_bundle(str(staging), 1e-5, 1e-4)


def test_points_are_remade_per_axis_with_padded_masks_and_the_artifact_is_guarded(tmp_path: Path) -> None:
    tensors = [random_ids([2, 16]), {"name": "attention_mask", "from": "ones", "shape": [2, 16]}]
    job = make_job(tmp_path, tensors=tensors, strict=True)
    job["trace"]["envelope"] = envelope(
        [("batch", 1, 4), ("sequence", 4, 32)],
        {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]},
        [("traced", {"batch": None, "sequence": None}), ("p1", {"batch": 4, "sequence": 32}),
         ("p2", {"batch": 1, "sequence": None}), ("p3", {"batch": 3, "sequence": 5})],
        pad_masks=True,
    )
    data = run_export(job)
    assert data["guarded"] is True
    assert [(c["case"], c["shape"], c.get("sizes")) for c in data["cases"]] == [
        ("traced", [2, 16], {"batch": 2, "sequence": 16}),
        ("p1", [4, 32], {"batch": 4, "sequence": 32}),
        ("p2", [1, 16], {"batch": 1, "sequence": 16}),
        ("p3", [3, 5], {"batch": 3, "sequence": 5}),
    ]
    samples = load_file(str(tmp_path / "sample_inputs.safetensors"))
    mask = samples["p1/attention_mask"]
    assert mask.shape == (4, 32)
    # Right padding: each row is ones then zeros, at least one token, and some row is padded.
    for row in mask.tolist():
        ones = sum(row)
        assert ones >= 1 and row == [1] * ones + [0] * (32 - ones)
    assert (mask == 0).any()
    assert samples["p1/input_ids"].max() < TINY_BERT["vocab_size"]
    result = _verify(tmp_path)
    assert result["passed"], result
    # The saved artifact refuses what the envelope does not hold, naming the tensor, dimension and range.
    module = torch.jit.load(str(tmp_path / "model.pt"))
    module(torch.ones(4, 32, dtype=torch.long), torch.ones(4, 32, dtype=torch.long))
    with pytest.raises(torch.jit.Error, match=r"tsexport envelope: input_ids dimension 0 \(batch\) is 5, outside the verified range \[1, 4\]"):
        module(torch.ones(5, 8, dtype=torch.long), torch.ones(5, 8, dtype=torch.long))
    with pytest.raises(torch.jit.Error, match=r"attention_mask dimension 1 \(sequence\) is 3, outside the verified range \[4, 32\]"):
        module(torch.ones(1, 4, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))
    assert "forward(self,\n    input_ids: Tensor,\n    attention_mask: Tensor)" in module.code


def test_gpt2_without_a_mask_fails_at_another_batch_and_the_guard_op_narrows_it(tmp_path: Path) -> None:
    job = make_job(tmp_path, cls="GPT2LMHeadModel", config=TINY_GPT2, tensors=[random_ids([1, 16])], strict=False)
    job["trace"]["envelope"] = envelope(
        [("batch", 1, 4), ("sequence", 1, None)], {"input_ids": ["batch", "sequence"]},
        [("traced", {"batch": None, "sequence": None}), ("p1", {"batch": 1, "sequence": 1}),
         ("p2", {"batch": 4, "sequence": None})],
    )
    run_export(job)
    result = _verify(tmp_path)
    by_case = {c["case"]: c for c in result["cases"]}
    assert by_case["traced"]["passed"] and by_case["p1"]["passed"]
    assert not by_case["p2"]["passed"] and "out of bounds" in by_case["p2"]["error"]
    # The Swift side narrows a default envelope and asks the verifying worker to rewrite the guard.
    worker = Worker()
    try:
        _, answer = worker.request("guard", dir=str(tmp_path), ranges={"batch": [1, 1], "sequence": [1, 16]})
    finally:
        worker.close()
    assert answer["ok"], answer
    dims = answer["data"]["envelope"]["inputs"][0]["dims"]
    assert [(d["role"], d["min"], d["max"]) for d in dims] == [("batch", 1, 1), ("sequence", 1, 16)]
    module = torch.jit.load(str(tmp_path / "model.pt"))
    with pytest.raises(torch.jit.Error, match=r"input_ids dimension 0 \(batch\) is 2, outside the verified range \[1, 1\]"):
        module(torch.ones(2, 4, dtype=torch.long))
    # The narrowed artifact still matches at the points inside.
    result = _verify(tmp_path)
    assert {c["case"]: c["passed"] for c in result["cases"]} == {"traced": True, "p1": True, "p2": False}


def test_the_guard_op_needs_both_keys(tmp_path: Path) -> None:
    worker = Worker()
    try:
        _, answer = worker.request("guard", dir=str(tmp_path))
    finally:
        worker.close()
    assert (answer["ok"], answer["code"]) == (False, "bad_request")
    assert "ranges" in answer["message"]


def test_decoder_inputs_have_a_length_of_their_own(tmp_path: Path) -> None:
    from tsexport_worker.export import inputs
    from tsexport_worker.protocol import TensorSpec

    specs = [TensorSpec(index=0, name="input_ids", source="random", dtype="int64", shape=[1, 10], values=None, low=None, high=None,
                        axes=["batch", "sequence"]),
             TensorSpec(index=1, name="decoder_input_ids", source="random", dtype="int64", shape=[1, 6], values=None, low=None, high=None,
                        axes=["batch", "decoder_sequence"]),
             TensorSpec(index=2, name="decoder_attention_mask", source="ones", dtype="int64", shape=[1, 7], values=None, low=None, high=None,
                        axes=["batch", "decoder_sequence"])]
    tensors = [torch.zeros(1, 10, dtype=torch.long), torch.zeros(1, 6, dtype=torch.long), torch.zeros(1, 7, dtype=torch.long)]
    with pytest.raises(Exception) as caught:
        inputs.check_agreement(specs, tensors)
    assert "decoder_attention_mask has decoder sequence length 7 but decoder_input_ids" in str(caught.value)
    inputs.check_agreement(specs[:2], tensors[:2])  # 10 against 6: separate groups, no error


def test_the_guard_is_wrapped_when_the_request_asks_and_only_then(tmp_path: Path) -> None:
    """The plan decides `trace.guard` (torch.jit.trace artifacts only); the worker wraps model.pt as asked."""
    import requestkit

    from tsexport_worker.errors import WorkerError
    from tsexport_worker.protocol import parse_job

    planned = requestkit.export_job("tiny-bert", tmp_path / "guarded")
    assert planned["trace"]["guard"] is True
    unguarded = requestkit.export_job("tiny-bert", tmp_path / "unguarded")
    unguarded["trace"]["guard"] = False
    for job, guarded in ((planned, True), (unguarded, False)):
        data = run_export(job)
        assert data["guarded"] is guarded
        code = torch.jit.load(str(Path(job["staging_dir"]) / "model.pt")).code
        assert ("tsexport envelope" in code) is guarded, code[:400]
    aoti = requestkit.export_job("tiny-bert-aoti-int8", tmp_path / "aoti")
    assert aoti["trace"]["guard"] is False
    aoti["trace"]["guard"] = True
    with pytest.raises(WorkerError) as caught:
        parse_job(aoti)
    assert (caught.value.code, caught.value.field) == ("bad_request", "spec.trace.guard")
