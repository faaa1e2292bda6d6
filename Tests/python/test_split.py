"""The encoder/decoder split (split.py): the two artifacts, greedy decoding with them against generate, and the
refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import requestkit
import torch
import yaml
from workerkit import TINY_BERT, TINY_GPT2, make_job, minilm_dir, random_ids, run_export, run_python
from workerkit import SPLIT_MODELS

SPLIT = {"kind": "encoder-decoder", "max_length": 16, "cache": False}


def export_split(staging: Path, cls: str, config: dict[str, Any], split: dict[str, Any] | None = None,
                 **kwargs: Any) -> dict[str, Any]:
    """Export with spec.trace.split in the job."""
    from tsexport_worker.export.export import export
    from tsexport_worker.protocol import parse_job

    ids = {"name": "input_ids", "from": "random", "shape": [1, 10], "low": 3, "high": 99}
    tensors = kwargs.pop("tensors", [
        ids, {"name": "attention_mask", "from": "values", "values": [[1] * 8 + [0] * 2]},
        {**ids, "name": "decoder_input_ids"},
    ])
    job = make_job(staging, cls, config, tensors, check_shapes=kwargs.pop("check_shapes", [[2, 7], [3, 10]]),
                   split=split or SPLIT, **kwargs)
    return export(parse_job(job))


GREEDY = r"""
import json, sys
import torch

bundle = sys.argv[1]
extra = {"tsexport/record.json": ""}
torch.jit.load(bundle + "/model.pt", _extra_files=extra)
g = json.loads(extra["tsexport/record.json"])["generation"]
encoder = torch.jit.load(bundle + "/" + g["encoder"]["file"])
step = torch.jit.load(bundle + "/" + g["decoder_step"]["file"])
input_ids, mask = torch.tensor(json.loads(sys.argv[2])), torch.tensor(json.loads(sys.argv[3]))
length, batch = g["max_length"], input_ids.shape[0]
eos = torch.tensor(g["eos_token_ids"])
with torch.no_grad():
    hidden = encoder(input_ids, mask)[0]
    ids = torch.full((batch, length), g["pad_token_id"], dtype=torch.long)
    ids[:, 0] = g["decoder_start_token_id"]
    finished = torch.zeros(batch, dtype=torch.bool)
    for t in range(length - 1):
        logits = step(ids, hidden, mask, torch.full((batch,), t, dtype=torch.long))[0].clone()
        if g["suppress_token_ids"]:
            logits[:, g["suppress_token_ids"]] = -float("inf")
        if t == 0 and g["begin_suppress_token_ids"]:
            logits[:, g["begin_suppress_token_ids"]] = -float("inf")
        if t + 1 < g["min_length"]:
            logits[:, eos] = -float("inf")
        forced = g["forced_bos_token_id"] if t == 0 else g["forced_eos_token_id"] if t + 2 == length else None
        if forced is not None:
            logits = torch.full_like(logits, -float("inf"))
            logits[:, forced] = 0
        token = logits.argmax(-1)
        token[finished] = g["pad_token_id"]
        ids[:, t + 1] = token
        finished |= torch.isin(token, eos)
        if finished.all():
            break
print(json.dumps({"tokens": ids[:, : t + 2].tolist(), "transformers_imported": "transformers" in sys.modules}))
"""


@pytest.mark.parametrize("cls", list(SPLIT_MODELS))
def test_greedy_decoding_with_the_two_artifacts_matches_generate(tmp_path: Path, cls: str) -> None:
    import transformers

    config = SPLIT_MODELS[cls]
    data = export_split(tmp_path, cls, config)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "decoder_step.pt", "encoder.pt", "model.pt", "reference_outputs.safetensors", "sample_inputs.safetensors",
    ]
    generator = torch.Generator().manual_seed(1)
    source = torch.randint(3, 99, (3, 9), generator=generator)
    mask = torch.ones_like(source)
    mask[1, 6:] = 0
    mask[2, 4:] = 0  # padded sources
    proc = run_python(GREEDY, str(tmp_path), json.dumps(source.tolist()), json.dumps(mask.tolist()))
    assert proc.returncode == 0, proc.stderr[-3000:]
    loop = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loop["transformers_imported"] is False

    model_class = getattr(transformers, cls)
    torch.manual_seed(0)
    eager = model_class(model_class.config_class(**config, attn_implementation="eager")).eval()
    expected = eager.generate(input_ids=source, attention_mask=mask, do_sample=False, num_beams=1,
                              max_new_tokens=SPLIT["max_length"] - 1)
    assert loop["tokens"] == expected.tolist()
    assert len({tuple(row) for row in loop["tokens"]}) > 1, "the rows should differ, or the test proves little"
    assert data["generation"]["max_length"] == SPLIT["max_length"]


def test_the_split_bundle_records_how_the_artifacts_connect_and_verifies(tmp_path: Path) -> None:
    from tsexport_worker.verify.verify import verify_bundle

    data = export_split(tmp_path, "MarianMTModel", SPLIT_MODELS["MarianMTModel"])
    g = data["generation"]
    assert (g["decoder_start_token_id"], g["eos_token_ids"], g["pad_token_id"], g["forced_eos_token_id"]) == (
        99, [0], 99, 0)
    assert [s["name"] for s in g["encoder"]["input_signature"]] == ["input_ids", "attention_mask"]
    assert [s["name"] for s in g["decoder_step"]["input_signature"]] == [
        "decoder_input_ids", "encoder_hidden_states", "attention_mask", "position"]
    assert g["decoder_step"]["input_signature"][0]["shape"] == [1, 16]
    assert g["decoder_step"]["output_signature"] == [
        {"name": "next_token_logits", "dtype": "float32", "shape": [1, 100]}]
    assert {"from": "encoder.output.encoder_hidden_states", "to": "decoder_step.input.encoder_hidden_states"} in g[
        "connections"]
    assert [a["file"] for a in data["artifacts"]] == ["encoder.pt", "decoder_step.pt"]
    extra = {"tsexport/record.json": ""}
    torch.jit.load(str(tmp_path / "encoder.pt"), _extra_files=extra)
    own = json.loads(extra["tsexport/record.json"])
    assert own["role"] == "encoder" and own["generation"]["max_length"] == 16

    result = verify_bundle(str(tmp_path), 1e-5, 1e-4)
    assert result["passed"], result["cases"]
    names = [c["case"] for c in result["cases"]]
    assert names == ["traced", "check0", "check1"] + [
        f"{role}.{case}" for role in ("encoder", "decoder_step") for case in ("traced", "padded", "check0", "check1")
    ]
    assert set(result["artifacts_sha256"]) == {"encoder.pt", "decoder_step.pt"}
    assert {c["artifact"] for c in result["cases"][3:]} == {"encoder.pt", "decoder_step.pt"}


def test_a_changed_or_missing_split_artifact_fails_verification(tmp_path: Path) -> None:
    from tsexport_worker.errors import WorkerError
    from tsexport_worker.verify.verify import verify_bundle

    export_split(tmp_path, "MarianMTModel", SPLIT_MODELS["MarianMTModel"], check_shapes=[])
    encoder = torch.jit.load(str(tmp_path / "encoder.pt"))
    torch.jit.save(encoder, str(tmp_path / "decoder_step.pt"))  # the wrong program under the step's name
    cases = [c for c in verify_bundle(str(tmp_path), 1e-5, 1e-4)["cases"] if c.get("artifact") == "decoder_step.pt"]
    assert cases and all(not c["passed"] and "sha256" in c["error"] for c in cases)
    (tmp_path / "decoder_step.pt").unlink()
    with pytest.raises(WorkerError) as caught:
        verify_bundle(str(tmp_path), 1e-5, 1e-4)
    assert caught.value.code == "verify_failed" and "decoder_step.pt" in caught.value.message


def test_split_option_values_are_checked() -> None:
    from tsexport_worker.errors import WorkerError
    from tsexport_worker.protocol import SplitSpec, parse_split

    bounds = {"drift_limit": 1e-3, "padding_bound": {"absolute": 1e-3, "relative": 1e-2},
              "refuse_tracer_warnings": True}
    assert parse_split({"kind": "encoder-decoder", "max_length": 64, "cache": False, **bounds}) == SplitSpec(
        "encoder-decoder", 64, False, 1e-3, 1e-3, 1e-2, True)
    assert parse_split({"kind": "decoder-only", "max_length": 16, "cache": True, **bounds,
                        "refuse_tracer_warnings": False}) == SplitSpec(
        "decoder-only", 16, True, 1e-3, 1e-3, 1e-2, False)
    assert parse_split(None) is None
    for bad, field in [({"kind": "beam-search", "max_length": 16, "cache": False}, "spec.trace.split.kind"),
                       ({"kind": "encoder-decoder", "max_length": 1, "cache": False}, "spec.trace.split.max_length"),
                       ({"kind": "encoder-decoder", "max_length": "16", "cache": False}, "spec.trace.split.max_length"),
                       ({"kind": "encoder-decoder", "max_length": 16, "cache": "yes"}, "spec.trace.split.cache"),
                       ({"kind": "decoder-only", "max_length": 16, "cache": False}, "spec.trace.split.cache"),
                       ({"kind": "encoder-decoder", "max_length": 16, "cache": False, "drift_limit": 0},
                        "spec.trace.split.drift_limit"),
                       ({"kind": "encoder-decoder", "max_length": 16, "cache": False,
                         "padding_bound": {"absolute": 1e-3, "relative": -1}},
                        "spec.trace.split.padding_bound.relative"),
                       ({"kind": "encoder-decoder", "max_length": 16, "cache": False, "padding_bound": None},
                        "spec.trace.split.padding_bound"),
                       ({"kind": "encoder-decoder", "cache": False}, "spec.trace.split.max_length")]:
        with pytest.raises(WorkerError) as caught:
            parse_split({**bounds, **bad})
        assert caught.value.code == "bad_request" and caught.value.field == field


@pytest.mark.parametrize(
    ("cls", "config", "field", "words"),
    [
        ("BertModel", TINY_BERT, "spec.trace.split", "needs an encoder-decoder model"),
        ("MarianModel", {**SPLIT_MODELS["MarianMTModel"]}, "spec.model.class", "language-model head"),
        ("MarianMTModel", {**SPLIT_MODELS["MarianMTModel"], "max_position_embeddings": 12},
         "spec.trace.split.max_length", "decoder positions"),
        ("T5ForConditionalGeneration", {k: v for k, v in SPLIT_MODELS["T5ForConditionalGeneration"].items()
                                        if k != "decoder_start_token_id"},
         "spec.model.config.decoder_start_token_id", "decoder_start_token_id"),
    ],
)
def test_a_model_that_cannot_be_split_is_a_clear_error(
    tmp_path: Path, cls: str, config: dict[str, Any], field: str, words: str
) -> None:
    from tsexport_worker.errors import WorkerError

    tensors = [random_ids([1, 10])]
    if cls != "BertModel":
        tensors.append({**random_ids([1, 10]), "name": "decoder_input_ids"})
    with pytest.raises(WorkerError) as caught:
        export_split(tmp_path, cls, config, tensors=tensors, check_shapes=[])
    assert caught.value.field == field, caught.value.message
    assert words in caught.value.message
    assert not (tmp_path / "model.pt").exists()


def test_a_decoder_that_padding_changes_is_refused_for_the_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stands in for a decoder that looks ahead: the unpadded prefix gives other logits than the padded buffer.
    from tsexport_worker.generation import split as split_module
    from tsexport_worker.errors import WorkerError

    real = split_module._eager_next_logits
    monkeypatch.setattr(split_module, "_eager_next_logits", lambda *args: real(*args) + 1.0)
    with pytest.raises(WorkerError) as caught:
        export_split(tmp_path, "MarianMTModel", SPLIT_MODELS["MarianMTModel"], check_shapes=[])
    assert (caught.value.code, caught.value.field) == ("trace_failed", "spec.trace.split")
    assert "not causal" in caught.value.message


def test_the_split_travels_in_the_job_through_the_serve_loop(tmp_path: Path) -> None:
    from workerkit import Worker

    planned = requestkit.requests("tiny-marian-split", tmp_path)
    worker = Worker()
    try:
        _, message = worker.request("export", **requestkit.body(planned["export"]))
    finally:
        worker.close()
    assert message["type"] == "result", message
    assert [a["file"] for a in message["data"]["artifacts"]] == ["encoder.pt", "decoder_step.pt"]
    staging = Path(planned["export"]["job"]["staging_dir"])
    assert (staging / "decoder_step.pt").is_file()
    bound = message["data"]["generation"]["padding_check"]
    split = planned["export"]["job"]["trace"]["split"]
    assert bound["max_abs_error"] <= bound["bound"]
    assert bound["bound"] >= split["padding_bound"]["absolute"]


def test_the_padding_bound_is_the_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A look-ahead of 0.5 in every logit is refused under the plan's bound and kept under a bound the request
    widens: the worker applies the bound it is sent."""
    from tsexport_worker.errors import WorkerError
    from tsexport_worker.generation import split as split_module

    real = split_module._eager_next_logits
    monkeypatch.setattr(split_module, "_eager_next_logits", lambda *args: real(*args) + 0.5)
    job = requestkit.export_job("tiny-marian-split", tmp_path / "planned")
    with pytest.raises(WorkerError) as caught:
        run_export(job)
    assert (caught.value.code, caught.value.field) == ("trace_failed", "spec.trace.split")
    assert "max abs difference 0.5 " in caught.value.message
    job = requestkit.export_job("tiny-marian-split", tmp_path / "widened")
    job["trace"]["split"]["padding_bound"] = {"absolute": 0.75, "relative": 1e-2}
    check = run_export(job)["generation"]["padding_check"]
    assert check["max_abs_error"] == pytest.approx(0.5, abs=1e-4)
    assert check["bound"] > 0.75 and check["cases"] == 4, check


@pytest.mark.parametrize("refuse", [True, False])
def test_a_split_part_whose_trace_warned_is_refused_when_the_request_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refuse: bool
) -> None:
    import warnings

    from tsexport_worker.errors import WorkerError
    from tsexport_worker.generation import split as split_module
    from tsexport_worker.torchjit import TracerWarning

    real = split_module.jit_trace

    def warning_trace(module: Any, example: Any, strict: bool) -> Any:  # stands in for a trace that warns
        warnings.warn("Converting a tensor to a Python boolean might cause the trace to be incorrect", TracerWarning,
                      stacklevel=1)
        return real(module, example, strict)

    monkeypatch.setattr(split_module, "jit_trace", warning_trace)
    job = requestkit.export_job("tiny-marian-split", tmp_path)
    assert job["trace"]["strict"] is False, "the manifest's strict is not what the split part's refusal reads"
    job["trace"]["split"]["refuse_tracer_warnings"] = refuse
    if refuse:
        with pytest.raises(WorkerError) as caught:
            run_export(job)
        assert (caught.value.code, caught.value.field) == ("strict_violation", "spec.trace.strict")
        assert "the encoder (encoder.pt)" in caught.value.message
    else:
        data = run_export(job)
        parts = {a["file"]: a for a in data["artifacts"]}
        assert any("Python boolean" in w for w in parts["encoder.pt"]["tracer_warnings"]), parts
