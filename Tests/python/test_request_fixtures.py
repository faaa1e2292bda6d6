"""The request fixtures are what the Swift planner sends, and the worker accepts every one of them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requestkit


def test_the_committed_fixtures_are_what_plan_json_gives() -> None:
    """scripts/request-fixtures --check plans the fixture manifests with the built tsexport and compares; a missing
    binary fails here (scripts/test builds it before pytest)."""
    result = subprocess.run([sys.executable, str(requestkit.REPO / "scripts" / "request-fixtures"), "--check"],
                            capture_output=True, text=True, check=False, env={**os.environ})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(requestkit.names())} fixtures are what the plan gives" in result.stdout


def test_the_fixtures_cover_the_requests_the_tests_need() -> None:
    import yaml

    families = {doc["metadata"]["name"] for path in (requestkit.REPO / "specs" / "families").glob("*.yaml")
                for doc in yaml.safe_load_all(path.read_text()) if doc}
    assert set(requestkit.names()) == families | {
        "default-axes", "tiny-bert", "tiny-bert-aoti-int8", "tiny-bert-bf16", "tiny-bert-cuda", "tiny-bert-fp16",
        "tiny-bert-inf1", "tiny-bert-inf2", "tiny-bert-int8", "tiny-bert-text", "tiny-gpt2-cached", "tiny-marian-split"}
    marian = requestkit.requests("tiny-marian-split", "/r")
    assert marian["export"]["job"]["trace"]["split"] == {
        "kind": "encoder-decoder", "max_length": 16, "cache": False, "drift_limit": pytest.approx(1e-3),
        "padding_bound": {"absolute": pytest.approx(1e-3), "relative": pytest.approx(1e-2)},
        "refuse_tracer_warnings": False,
    }
    aoti = requestkit.requests("tiny-bert-aoti-int8", "/r")
    assert [d["max_batch_size"] for d in aoti["deploy"]] == [0], "model.pt2 is served at batch 1"
    assert aoti["export"]["job"]["trace"]["guard"] is False and aoti["guard"] is None
    bert = requestkit.requests("tiny-bert", "/r")
    assert [(d["kind"], d["max_batch_size"], d["variable_dims"]) for d in bert["deploy"]] == [
        ("triton", 2, True), ("torchserve", 2, True)]
    assert bert["export"]["job"]["staging_dir"] == "/r/.tsexport/staging/tiny-bert.staging"
    assert bert["guard"] == {"op": "guard", "dir": "/r/.tsexport/staging/tiny-bert.staging", "ranges": None}


@pytest.mark.parametrize("name", requestkit.names())
def test_the_worker_parses_every_request_the_plan_sends(name: str, tmp_path: Path) -> None:
    from tsexport_worker.deploy import parse_deploy
    from tsexport_worker.protocol import parse_job, parse_tolerance

    planned = requestkit.requests(name, tmp_path)
    job = parse_job(planned["export"]["job"])
    assert job.name == name and job.staging_dir == str(tmp_path / ".tsexport" / "staging" / f"{name}.staging")
    assert job.trace.guard == (planned["guard"] is not None)
    for request in planned["deploy"]:
        deploy = parse_deploy(requestkit.body(request))
        assert deploy.max_batch_size == request["max_batch_size"]
    verify = planned["verify_bundle"]
    assert set(verify) == {"op", "dir", "tolerance", "encode_check"} and verify["dir"] == job.staging_dir
    assert parse_tolerance(verify["tolerance"], "tolerance") == job.trace.tolerance


def test_the_hand_built_jobs_have_the_keys_the_plan_sends(tmp_path: Path) -> None:
    """workerkit.make_job starts from the plan's job; its tensors get the keys the plan's tensors have."""
    from workerkit import full_tensor, make_job

    planned = requestkit.export_job("tiny-bert", tmp_path)
    built = make_job(tmp_path)

    def keys(value: object, path: str = "") -> set[str]:
        if not isinstance(value, dict):
            return set()
        return {f"{path}.{k}" for k in value} | {p for k, v in value.items() if k not in ("envelope", "config",
                                                                                         "extra_record")
                                                 for p in keys(v, f"{path}.{k}")}

    assert keys(built) == keys(planned)
    for tensor in planned["inputs"]["tensors"]:
        assert set(full_tensor({"name": "input_ids", "from": "random", "shape": [1, 2]})) == set(tensor)


def test_a_planned_text_job_reads_the_tokenizer_at_the_repositorys_path(tmp_path: Path) -> None:
    """The tokenizer's absolute path travels as @REPO@; the planned export tokenizes, pads to pad_to and verifies
    at every planned point."""
    from workerkit import run_export

    from tsexport_worker.verify.verify import verify_bundle

    planned = requestkit.requests("tiny-bert-text", tmp_path)
    job = planned["export"]["job"]
    assert job["inputs"]["tokenizer"] == str(requestkit.REPO / "specs" / "tokenizers" / "tiny-bert")
    data = run_export(job)
    assert data["input_signature"] == [{"name": "input_ids", "dtype": "int64", "shape": [1, 16]},
                                       {"name": "attention_mask", "dtype": "int64", "shape": [1, 16]}]
    tolerance = planned["verify_bundle"]["tolerance"]
    verdict = verify_bundle(planned["verify_bundle"]["dir"], tolerance["atol"], tolerance["rtol"])
    assert verdict["passed"], verdict["cases"]
    assert [c["case"] for c in verdict["cases"]] == [p["case"] for p in job["trace"]["envelope"]["points"]]
