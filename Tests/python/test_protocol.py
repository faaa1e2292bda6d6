"""The worker as the Swift side sees it: a subprocess speaking JSON lines."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import requestkit
from workerkit import Worker, bench_request, run_python

# The tiny BERT of fixtures/manifests/tiny-bert.yaml, whose requests `tsexport plan --json` gave.
HIDDEN_SIZE = 32


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One worker process: hello, a bad line, the plan's export of a tiny BERT, shutdown."""
    planned = requestkit.requests("tiny-bert", tmp_path_factory.mktemp("protocol"))
    job = planned["export"]["job"]
    worker = Worker()
    transcript: dict = {"hello": worker.hello, "staging": Path(job["staging_dir"]), "planned": planned}
    worker.send_line("this is not json")
    transcript["bad_json"] = worker.read()
    transcript["unknown_op"] = worker.request("frobnicate")[1]
    transcript["probe"] = worker.request("probe")[1]
    transcript["progress"], transcript["export"] = worker.request("export", job=job)
    transcript["bad_job"] = worker.request("export", job={"model": {"class": "BertModel"}})[1]
    transcript["shutdown"] = worker.request("shutdown")[1]
    transcript["exit_code"] = worker.close()
    return transcript


def test_hello_comes_first_with_versions_and_targets(exported: dict) -> None:
    hello = exported["hello"]
    assert hello["type"] == "hello"
    assert hello["protocol"] == 2
    assert hello["worker_version"] == "2.0.0"
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
    assert data["output_signature"][0]["shape"] == [1, 14, HIDDEN_SIZE]
    points = exported["planned"]["export"]["job"]["trace"]["envelope"]["points"]
    assert [c["case"] for c in data["cases"]] == [p["case"] for p in points]
    assert data["cases"][0] == {"case": "traced", "shape": [1, 14], "sizes": {"batch": 1, "sequence": 14}}
    assert data["guarded"] is True, "the plan asked for the envelope guard"
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
    planned = requestkit.body(exported["planned"]["verify_bundle"])
    progress, answer = worker.request("verify_bundle", **planned)
    missing = worker.request("verify_bundle", **{**planned, "dir": str(exported["staging"] / "nope")})[1]
    assert worker.close() == 0  # end of stdin ends it
    assert [(m["stage"], m["status"]) for m in progress] == [("verify", "start"), ("verify", "done")]
    assert answer["ok"] is True
    cases = answer["data"]["cases"]
    assert [c["case"] for c in cases] == [c["case"] for c in exported["export"]["data"]["cases"]]
    assert cases[0]["case"] == "traced" and cases[0]["shape"] == [1, 14]
    assert all(c["passed"] and c["max_abs_error"] <= 1e-5 for c in cases)
    assert len(answer["data"]["sha256"]) == 64
    assert missing["code"] == "verify_failed" and "model.pt" in missing["message"]


def test_verify_never_imports_transformers(exported: dict) -> None:
    proc = run_python(
        """
        import sys
        from tsexport_worker.verify.verify import verify_bundle
        data = verify_bundle(sys.argv[1], 1e-5, 1e-4)
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
        from tsexport_worker.serve import protocol_stream
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


def test_unexpected_exceptions_are_internal_and_the_worker_answers(tmp_path: Path, monkeypatch: Any) -> None:
    from tsexport_worker.export import export as export_module
    from tsexport_worker.serve import answer
    from tsexport_worker.protocol import Channel

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(export_module, "write_reference", broken)
    stream = io.StringIO()
    job = requestkit.export_job("tiny-bert", tmp_path)
    keep_going = answer(json.dumps({"id": 7, "op": "export", "job": job}), Channel(stream))
    messages = [json.loads(line) for line in stream.getvalue().splitlines()]
    final = messages[-1]
    assert keep_going is True
    assert [m["type"] for m in messages].count("error") == 1 and final["type"] == "error"
    assert (final["id"], final["code"], final["stage"]) == (7, "internal", "reference")
    assert "RuntimeError: disk on fire" in final["message"] and "disk on fire" in final["detail"]


def test_a_job_with_a_bad_value_is_bad_request(tmp_path: Path) -> None:
    from tsexport_worker.errors import WorkerError
    from tsexport_worker.protocol import parse_job

    job = requestkit.export_job("tiny-bert", tmp_path)
    job["model"]["dtype"] = "float64"
    with pytest.raises(WorkerError) as caught:
        parse_job(job)
    assert (caught.value.code, caught.value.field) == ("bad_request", "spec.model.dtype")


# ---------------------------------------------------------------------------------------------------------------
# Protocol 2: every key of every request is required, and no other key is accepted


def _without(body: dict[str, Any], path: str) -> dict[str, Any]:
    """A deep copy of `body` without the key at the dotted path (`model.seed`, `inputs.tensors[0].dtype`)."""
    copy = json.loads(json.dumps(body))
    *parents, last = path.split(".")
    node: Any = copy
    for part in parents:
        name, _, index = part.partition("[")
        node = node[name]
        if index:
            node = node[int(index.rstrip("]"))]
    del node[last]
    return copy


JOB_FIELDS = [
    ("name", "job.name"), ("staging_dir", "job.staging_dir"), ("extra_record", "job.extra_record"),
    ("model", "job.model"), ("inputs", "job.inputs"), ("trace", "job.trace"), ("target", "job.target"),
    *[(f"model.{k}", f"spec.model.{k}") for k in (
        "class", "pretrained", "pretrained_is_local", "revision", "config", "torchscript", "seed", "dtype",
        "attn_implementation", "trust_remote_code", "allow_pickle", "library", "forward")],
    *[(f"inputs.{k}", f"spec.inputs.{k}") for k in (
        "tokenizer", "tokenizer_is_local", "tokenizer_revision", "text", "add_special_tokens", "mask", "pad_to",
        "tensors")],
    *[(f"inputs.tensors[0].{k}", f"spec.inputs.tensors[0].{k}") for k in (
        "name", "from", "dtype", "shape", "values", "low", "high", "axes")],
    *[(f"trace.{k}", f"spec.trace.{k}") for k in ("api", "strict", "check_shapes", "split", "tolerance", "envelope",
                                                           "float32_reference", "encode_check", "guard")],
    ("trace.tolerance.atol", "spec.trace.tolerance.atol"), ("trace.tolerance.rtol", "spec.trace.tolerance.rtol"),
    ("trace.tolerance.min_cosine", "spec.trace.tolerance.min_cosine"), ("target.quantize", "spec.target.quantize"),
    ("target.hardware", "spec.target.hardware"), ("target.optimize", "spec.target.optimize"),
    *[(f"trace.split.{k}", f"spec.trace.split.{k}") for k in (
        "kind", "max_length", "cache", "drift_limit", "padding_bound", "refuse_tracer_warnings")],
    ("trace.split.padding_bound.absolute", "spec.trace.split.padding_bound.absolute"),
    ("trace.split.padding_bound.relative", "spec.trace.split.padding_bound.relative"),
]


@pytest.mark.parametrize(("path", "field"), JOB_FIELDS)
def test_an_export_job_missing_a_field_is_bad_request_naming_it(tmp_path: Path, path: str, field: str) -> None:
    from tsexport_worker.errors import WorkerError
    from tsexport_worker.protocol import parse_job

    with pytest.raises(WorkerError) as caught:
        parse_job(_without(requestkit.export_job("tiny-marian-split", tmp_path), path))
    assert (caught.value.code, caught.value.field) == ("bad_request", field), caught.value.message
    assert f"`{field}`" in caught.value.message and "missing" in caught.value.message


def test_split_keys_are_required_and_a_nullable_key_must_be_present(tmp_path: Path) -> None:
    from tsexport_worker.errors import WorkerError
    from tsexport_worker.protocol import parse_job

    job = requestkit.export_job("tiny-marian-split", tmp_path)
    job["trace"]["split"] = {"kind": "encoder-decoder"}
    with pytest.raises(WorkerError) as caught:
        parse_job(job)
    assert (caught.value.code, caught.value.field) == ("bad_request", "spec.trace.split.max_length")
    job = requestkit.export_job("tiny-bert", tmp_path)
    job["model"]["attn_implementation"] = None  # required and never null
    with pytest.raises(WorkerError) as caught:
        parse_job(job)
    assert (caught.value.code, caught.value.field) == ("bad_request", "spec.model.attn_implementation")


@pytest.mark.parametrize(("where", "field"), [
    ((), "job.surprise"), (("model",), "spec.model.surprise"), (("inputs",), "spec.inputs.surprise"),
    (("trace",), "spec.trace.surprise"), (("target",), "spec.target.surprise"),
])
def test_an_unknown_key_is_bad_request_naming_it(tmp_path: Path, where: tuple[str, ...], field: str) -> None:
    from tsexport_worker.errors import WorkerError
    from tsexport_worker.protocol import parse_job

    job = requestkit.export_job("tiny-bert", tmp_path)
    node = job
    for key in where:
        node = node[key]
    node["surprise"] = 1
    with pytest.raises(WorkerError) as caught:
        parse_job(job)
    assert (caught.value.code, caught.value.field) == ("bad_request", field)


def _full_requests(tmp_path: Path) -> dict[str, dict[str, Any]]:
    planned = requestkit.requests("tiny-bert", tmp_path)
    return {
        "probe": {},
        "shutdown": {},
        "export": requestkit.body(planned["export"]),
        "verify_bundle": requestkit.body(planned["verify_bundle"]),
        "deploy": requestkit.body(planned["deploy"][0]),
        "bench": bench_request(planned["verify_bundle"]["dir"]),
    }


REQUEST_FIELDS = [
    ("export", "job", "job"),
    ("verify_bundle", "dir", "dir"), ("verify_bundle", "tolerance", "tolerance"),
    ("verify_bundle", "tolerance.atol", "tolerance.atol"), ("verify_bundle", "tolerance.rtol", "tolerance.rtol"),
    ("verify_bundle", "tolerance.min_cosine", "tolerance.min_cosine"), ("verify_bundle", "encode_check", "encode_check"),
    *[("deploy", k, k) for k in ("kind", "bundle", "dest", "name", "max_batch_size", "variable_dims", "batch_dim",
                                 "version")],
    *[("bench", k, k) for k in ("dir", "shapes", "runs", "warmup", "threads", "report", "eager", "eager_missing")],
    ("export", "job.model.seed", "spec.model.seed"),
]


def test_every_op_refuses_a_missing_field_over_the_protocol(tmp_path: Path) -> None:
    """For each op: a request without one of its keys is answered bad_request with the key's path, and an unknown
    key is refused the same way; the worker stays up and answers the full request after."""
    full = _full_requests(tmp_path)
    worker = Worker()
    try:
        for op, path, field in REQUEST_FIELDS:
            _, answer = worker.request(op, **_without(full[op], path))
            assert (answer["type"], answer["code"], answer["field"]) == ("error", "bad_request", field), (op, answer)
            assert answer["stage"] is None
        for op, body in full.items():
            if op == "shutdown":
                continue
            _, answer = worker.request(op, **body, surprise=True)
            assert (answer["code"], answer["field"]) == ("bad_request", "surprise"), (op, answer)
        _, answer = worker.request("probe")
        assert answer["type"] == "result"
    finally:
        assert worker.close() == 0


def test_the_bench_eager_model_and_its_reason_are_checked(tmp_path: Path) -> None:
    from tsexport_worker.bench.bench import parse_bench_request
    from tsexport_worker.errors import WorkerError

    model = requestkit.export_job("tiny-bert", tmp_path)["model"]
    for body, field in [
        (bench_request(tmp_path, eager=None, eager_missing=None), "eager_missing"),
        (bench_request(tmp_path, eager={"model": model}, eager_missing="why"), "eager_missing"),
        (bench_request(tmp_path, eager={"model": {**model, "seed": None}}), "eager.model.seed"),
        (bench_request(tmp_path, eager={"model": {k: v for k, v in model.items() if k != "dtype"}}),
         "eager.model.dtype"),
        (bench_request(tmp_path, eager={"model": model, "extra": 1}), "eager.extra"),
        (bench_request(tmp_path, shapes=None), "shapes"),
    ]:
        with pytest.raises(WorkerError) as caught:
            parse_bench_request(body)
        assert (caught.value.code, caught.value.field) == ("bad_request", field)
    parsed = parse_bench_request(bench_request(tmp_path, eager={"model": model}))
    assert parsed.eager is not None and parsed.eager.attn_implementation == "eager" and parsed.eager_missing is None
