"""The worker as the Swift side sees it: a subprocess speaking JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from workerkit import TINY_BERT, Worker, make_job, random_ids, run_python, worker_env


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One worker process: hello, a bad line, an export of a tiny BERT, shutdown."""
    staging = tmp_path_factory.mktemp("protocol") / "bundle"
    worker = Worker()
    transcript: dict = {"hello": worker.hello, "staging": staging}
    worker.send_line("this is not json")
    transcript["bad_json"] = worker.read()
    transcript["unknown_op"] = worker.request("frobnicate")[1]
    transcript["probe"] = worker.request("probe")[1]
    job = make_job(
        staging,
        tensors=[random_ids([1, 14]), {"name": "attention_mask", "from": "ones", "shape": [1, 14]}],
        check_shapes=[[1, 7], [2, 20]],
    )
    transcript["progress"], transcript["export"] = worker.request("export", job=job)
    transcript["bad_job"] = worker.request("export", job={"model": {"class": "BertModel"}})[1]
    transcript["shutdown"] = worker.request("shutdown")[1]
    transcript["exit_code"] = worker.close()
    return transcript


def test_hello_comes_first_with_versions_and_targets(exported: dict) -> None:
    hello = exported["hello"]
    assert hello["type"] == "hello"
    assert hello["protocol"] == 1
    assert hello["worker_version"] == "1.0.0"
    assert hello["python"].count(".") == 2
    assert hello["torch"].startswith("2.")
    assert hello["transformers"].startswith("5.")
    assert hello["missing"] == []
    assert set(hello["targets"]) == {"cpu", "cuda", "inf1", "inf2"}
    assert hello["targets"]["cpu"]["available"] is True
    assert hello["targets"]["inf2"]["available"] is False
    assert hello["targets"]["inf2"]["reason"].startswith("target inf2 needs torch-neuronx in the Python runtime (pip install torch-neuronx")
    assert any(f.endswith("torch/__init__.py") for f in hello["package_files"])
    assert exported["probe"]["data"]["targets"] == hello["targets"]


def test_bad_lines_are_answered_and_the_worker_stays_up(exported: dict) -> None:
    assert exported["bad_json"]["type"] == "error"
    assert exported["bad_json"]["code"] == "bad_request"
    assert exported["bad_json"]["id"] is None
    assert exported["unknown_op"]["code"] == "bad_request"
    assert "frobnicate" in exported["unknown_op"]["message"]
    assert exported["bad_job"]["code"] == "bad_request"
    assert "staging_dir" in exported["bad_job"]["message"]
    assert exported["export"]["ok"] is True  # after both bad requests


def test_export_reports_each_stage_in_order(exported: dict) -> None:
    stages = [(m["stage"], m["status"]) for m in exported["progress"]]
    expected = []
    for stage in ("load", "inputs", "trace", "serialize", "reference"):
        expected += [(stage, "start"), (stage, "done")]
    assert stages == expected
    assert all(isinstance(m["elapsed_ms"], int) for m in exported["progress"] if m["status"] == "done")


def test_export_result_describes_the_bundle(exported: dict) -> None:
    data = exported["export"]["data"]
    assert data["input_signature"] == [
        {"name": "input_ids", "dtype": "int64", "shape": [1, 14]},
        {"name": "attention_mask", "dtype": "int64", "shape": [1, 14]},
    ]
    assert [o["name"] for o in data["output_signature"]] == ["last_hidden_state", "pooler_output"]
    assert data["output_signature"][0]["shape"] == [1, 14, TINY_BERT["hidden_size"]]
    assert data["cases"] == [
        {"case": "traced", "shape": [1, 14]}, {"case": "check0", "shape": [1, 7]}, {"case": "check1", "shape": [2, 20]},
    ]
    assert data["model_class"] == "BertModel"
    assert set(data["timings_ms"]) == {"load", "inputs", "trace", "serialize", "reference"}
    staging: Path = exported["staging"]
    for name in ("model.pt", "sample_inputs.safetensors", "reference_outputs.safetensors"):
        assert (staging / name).is_file()


def test_shutdown_answers_and_exits_zero(exported: dict) -> None:
    assert exported["shutdown"] == {"type": "result", "id": exported["shutdown"]["id"], "ok": True, "data": {}}
    assert exported["exit_code"] == 0


def test_verify_bundle_in_a_second_worker_process(exported: dict) -> None:
    worker = Worker()
    progress, answer = worker.request(
        "verify_bundle", dir=str(exported["staging"]), tolerance={"atol": 1e-5, "rtol": 1e-4}
    )
    missing = worker.request("verify_bundle", dir=str(exported["staging"] / "nope"))[1]
    assert worker.close() == 0  # end of stdin ends it
    assert [(m["stage"], m["status"]) for m in progress] == [("verify", "start"), ("verify", "done")]
    assert answer["ok"] is True
    cases = answer["data"]["cases"]
    assert [(c["case"], c["shape"]) for c in cases] == [("traced", [1, 14]), ("check0", [1, 7]), ("check1", [2, 20])]
    assert all(c["passed"] and c["max_abs_error"] <= 1e-5 for c in cases)
    assert len(answer["data"]["sha256"]) == 64
    assert missing["code"] == "verify_failed" and "model.pt" in missing["message"]


def test_verify_bundle_one_shot_cli(exported: dict) -> None:
    proc = subprocess.run(
        [sys.executable, "-u", "-m", "tsexport_worker", "verify-bundle", str(exported["staging"]),
         "--atol", "1e-6", "--rtol", "1e-5"],
        capture_output=True, text=True, timeout=120, env=worker_env(),
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    message = json.loads(lines[0])
    assert message["type"] == "result" and message["id"] == 0
    assert message["data"]["tolerance"] == {"atol": 1e-6, "rtol": 1e-5}
    assert message["data"]["passed"] is True
    assert proc.returncode == 0


def test_verify_never_imports_transformers(exported: dict) -> None:
    proc = run_python(
        """
        import sys
        from tsexport_worker.verify import verify_bundle
        data = verify_bundle(sys.argv[1])
        assert data["passed"], data
        print("transformers" in sys.modules)
        """,
        str(exported["staging"]),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_anything_printed_to_stdout_lands_on_stderr() -> None:
    proc = run_python(
        """
        import os
        from tsexport_worker.__main__ import protocol_stream
        from tsexport_worker.protocol import Channel

        channel = Channel(protocol_stream())
        print("python noise")
        os.write(1, b"C-level noise\\n")
        channel.send({"type": "result", "id": 1, "ok": True, "data": {"text": "caf\\u00e9"}})
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ['{"type":"result","id":1,"ok":true,"data":{"text":"café"}}']
    assert "python noise" in proc.stderr and "C-level noise" in proc.stderr
