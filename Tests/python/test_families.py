"""Architecture coverage (issue 6): every manifest in specs/families exported and verified, each artifact compared
with an independent eager model on fresh inputs in a fresh process; Auto* classes resolved from a pretrained folder;
the encoder/decoder split and a greedy decoding loop with the two artifacts against transformers' own generate;
clear errors where a family cannot be traced faithfully."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from workerkit import TINY_BERT, TINY_GPT2, make_job, minilm_dir, random_ids, run_export, run_python

REPO = Path(__file__).resolve().parents[2]
FAMILIES = REPO / "specs" / "families"
SPLIT = {"kind": "encoder-decoder", "max_length": 16}

# What the issue asks the matrix to cover, by class.
REQUIRED_CLASSES = {
    "BertModel", "BertForMaskedLM", "BertForSequenceClassification", "BertForTokenClassification",
    "BertForQuestionAnswering", "DistilBertModel", "RobertaModel", "XLMRobertaForSequenceClassification",
    "AlbertForMaskedLM", "ElectraForPreTraining", "GPT2Model", "GPT2LMHeadModel", "BartForConditionalGeneration",
    "MarianMTModel", "T5EncoderModel", "ViTForImageClassification",
}


def family_manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(FAMILIES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path.name, doc))
    return found


def job_from_manifest(doc: dict[str, Any], staging: Path) -> dict[str, Any]:
    """The job the Swift side builds from a manifest (Sources/Execution/Job.swift), defaults filled in."""
    spec = doc["spec"]
    model, trace = spec["model"], spec.get("trace", {})
    tensors = [
        {"name": t["name"], "from": t["from"], "dtype": t.get("dtype", "int64"), "shape": t.get("shape"),
         "values": t.get("values"), "low": t.get("low"), "high": t.get("high")}
        for t in spec["inputs"]["tensors"]
    ]
    job = make_job(
        staging, model["class"], model.get("config", {}), tensors,
        model={"seed": model.get("seed", 0), "torchscript": model.get("torchscript", True),
               "dtype": model.get("dtype", "float32"),
               "attn_implementation": model.get("attn_implementation", "eager")},
        strict=trace.get("strict", True), check_shapes=trace.get("check_shapes", []),
    )
    job["name"] = doc["metadata"]["name"]
    return job


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any], dict[str, Any]]]:
    root = tmp_path_factory.mktemp("families")
    made = {}
    for _, doc in family_manifests():
        name = doc["metadata"]["name"]
        staging = root / name
        made[name] = (staging, run_export(job_from_manifest(doc, staging)), doc)
    return made


def test_the_family_manifests_cover_the_issue() -> None:
    manifests = family_manifests()
    classes = {doc["spec"]["model"]["class"] for _, doc in manifests}
    assert REQUIRED_CLASSES <= classes, REQUIRED_CLASSES - classes
    names = [doc["metadata"]["name"] for _, doc in manifests]
    assert len(names) == len(set(names))
    for _, doc in manifests:  # tiny, so the matrix runs in minutes on two cores
        config = doc["spec"]["model"]["config"]
        width = config.get("hidden_size", config.get("d_model", config.get("dim", config.get("n_embd"))))
        assert width == 32, doc["metadata"]["name"]
        assert "strict" in doc["spec"]["trace"], "each family states whether it traces strictly"


def test_every_family_exports_and_verifies_at_every_check_shape(families: dict) -> None:
    from tsexport_worker.verify import verify_bundle

    for name, (staging, data, doc) in families.items():
        result = verify_bundle(str(staging))
        assert result["passed"], (name, result["cases"])
        assert len(result["cases"]) == 1 + len(doc["spec"]["trace"]["check_shapes"])
        assert data["model_class"] == doc["spec"]["model"]["class"]
        if doc["spec"]["trace"].get("strict", True):
            assert data["tracer_warnings"] == [], name


# Measured on transformers 5.24 / torch 2.13, eager attention: which families warn while tracing, and where.
EXPECTED_WARNING_SOURCES = {
    "family-bert-seq-cls": {"transformers/masking_utils.py"},
    "family-distilbert-qa": {"transformers/masking_utils.py"},
    "family-roberta": {"torch/nn/functional.py", "transformers/masking_utils.py"},
    "family-xlm-roberta": {"torch/nn/functional.py"},
    "family-gpt2": {"transformers/masking_utils.py"},
    "family-gpt2-lm": {"transformers/masking_utils.py"},
    "family-bart": {"torch/nn/functional.py", "transformers/masking_utils.py"},
    "family-marian": {"torch/nn/functional.py", "transformers/masking_utils.py"},
    "family-vit": {"transformers/models/vit/modeling_vit.py"},
}


def test_tracer_warnings_per_family_are_the_measured_ones(families: dict) -> None:
    for name, (_, data, _) in families.items():
        sources = {re.sub(r":\d+\)$", "", w.rsplit(" (", 1)[1]) for w in data["tracer_warnings"]}
        assert sources == EXPECTED_WARNING_SOURCES.get(name, set()), (name, data["tracer_warnings"])


FRESH = r"""
import json, sys
import torch, transformers

def fresh(signature, config, generator):
    args = []
    for entry in signature:
        shape = [2] + entry["shape"][1:]  # another batch size, fresh values
        name, dtype = entry["name"], getattr(torch, entry["dtype"])
        if dtype.is_floating_point:
            args.append(torch.randn(shape, generator=generator).to(dtype))
        elif name.endswith("attention_mask"):
            mask = torch.ones(shape, dtype=dtype)
            mask[1, shape[1] - max(1, shape[1] // 3):] = 0  # the second row is padded
            args.append(mask)
        elif name == "token_type_ids":
            args.append(torch.randint(0, 2, shape, generator=generator, dtype=dtype))
        else:
            args.append(torch.randint(3, config.vocab_size - 1, shape, generator=generator, dtype=dtype))
    return args

report = {}
for entry in json.loads(sys.argv[1]):
    extra = {"tsexport/record.json": ""}
    traced = torch.jit.load(entry["dir"] + "/model.pt", _extra_files=extra)
    record = json.loads(extra["tsexport/record.json"])
    cls = getattr(transformers, record["model_class"])
    config = cls.config_class(**entry["config"], attn_implementation="eager")
    if hasattr(config, "use_cache"):
        config.use_cache = False
    torch.manual_seed(record["seed"])
    eager = cls(config).eval()
    args = fresh(record["input_signature"], config, torch.Generator().manual_seed(1234))
    names = [s["name"] for s in record["input_signature"]]
    with torch.no_grad():
        actual = traced(*args)
        expected = eager(**dict(zip(names, args))).to_tuple()
    actual = actual if isinstance(actual, tuple) else (actual,)
    assert len(actual) == len(expected), (entry["name"], len(actual), len(expected))
    report[entry["name"]] = max(float((a - e).abs().max()) for a, e in zip(actual, expected))
print(json.dumps(report))
"""


def test_artifacts_match_an_independent_eager_model_on_fresh_inputs(families: dict) -> None:
    entries = [
        {"name": name, "dir": str(staging), "config": doc["spec"]["model"]["config"]}
        for name, (staging, _, doc) in families.items()
    ]
    proc = run_python(FRESH, json.dumps(entries), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(errors) == set(families)
    for name, error in errors.items():
        assert error <= 1e-4, f"{name}: max abs error {error} on fresh inputs"


def test_the_readme_coverage_matrix_names_every_family_class() -> None:
    readme = (REPO / "README.md").read_text()
    assert "## Coverage matrix" in readme
    section = readme.split("## Coverage matrix", 1)[1].split("\n## ", 1)[0]
    for _, doc in family_manifests():
        assert doc["spec"]["model"]["class"] in section, doc["spec"]["model"]["class"]
    assert "decoder_step.pt" in section and "use_cache" in section


# ---------------------------------------------------------------------------------------------------------------
# Auto* classes


@pytest.mark.parametrize(
    ("auto", "concrete"),
    [("AutoModel", "BertModel"), ("AutoModelForSequenceClassification", "BertForSequenceClassification")],
)
def test_auto_classes_resolve_to_the_concrete_class_and_record_it(tmp_path: Path, auto: str, concrete: str) -> None:
    job = make_job(
        tmp_path, auto, {}, [random_ids([1, 9], low=1000)],
        model={"pretrained": minilm_dir(), "pretrained_is_local": True}, check_shapes=[[2, 5]],
    )
    data = run_export(job)
    assert data["model_class"] == concrete
    extra = {"tsexport/record.json": ""}
    torch.jit.load(str(tmp_path / "model.pt"), _extra_files=extra)
    assert json.loads(extra["tsexport/record.json"])["model_class"] == concrete
    from tsexport_worker.verify import verify_bundle

    assert verify_bundle(str(tmp_path))["passed"]


# ---------------------------------------------------------------------------------------------------------------
# The encoder/decoder split and greedy decoding outside transformers

S2S = {"vocab_size": 100, "d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
       "decoder_attention_heads": 4, "encoder_ffn_dim": 37, "decoder_ffn_dim": 37, "max_position_embeddings": 64}
# A larger init_std than the default 0.02 so a tiny random model's tokens depend on its input (rows differ).
SPLIT_MODELS: dict[str, dict[str, Any]] = {
    "MarianMTModel": {**S2S, "pad_token_id": 99, "decoder_start_token_id": 99, "eos_token_id": 0, "init_std": 0.5},
    "BartForConditionalGeneration": {**S2S, "init_std": 0.5},
    "T5ForConditionalGeneration": {"vocab_size": 100, "d_model": 32, "d_kv": 8, "d_ff": 37, "num_layers": 2,
                                   "num_heads": 4, "decoder_start_token_id": 0, "initializer_factor": 25.0},
}


def export_split(staging: Path, cls: str, config: dict[str, Any], split: dict[str, Any] | None = None,
                 **kwargs: Any) -> dict[str, Any]:
    """Export with spec.trace.split (passed to export directly until the protocol's job parser carries it)."""
    from tsexport_worker.export import export
    from tsexport_worker.protocol import parse_job

    ids = {"name": "input_ids", "from": "random", "shape": [1, 10], "low": 3, "high": 99}
    tensors = kwargs.pop("tensors", [
        ids, {"name": "attention_mask", "from": "values", "values": [[1] * 8 + [0] * 2]},
        {**ids, "name": "decoder_input_ids"},
    ])
    job = make_job(staging, cls, config, tensors, check_shapes=kwargs.pop("check_shapes", [[2, 7], [3, 10]]), **kwargs)
    return export(parse_job(job), split=split or SPLIT)


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
    from tsexport_worker.verify import verify_bundle

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

    result = verify_bundle(str(tmp_path))
    assert result["passed"], result["cases"]
    names = [c["case"] for c in result["cases"]]
    assert names == ["traced", "check0", "check1"] + [
        f"{role}.{case}" for role in ("encoder", "decoder_step") for case in ("traced", "padded", "check0", "check1")
    ]
    assert set(result["artifacts_sha256"]) == {"encoder.pt", "decoder_step.pt"}
    assert {c["artifact"] for c in result["cases"][3:]} == {"encoder.pt", "decoder_step.pt"}


def test_a_changed_or_missing_split_artifact_fails_verification(tmp_path: Path) -> None:
    from tsexport_worker.errors import WorkerError
    from tsexport_worker.verify import verify_bundle

    export_split(tmp_path, "MarianMTModel", SPLIT_MODELS["MarianMTModel"], check_shapes=[])
    encoder = torch.jit.load(str(tmp_path / "encoder.pt"))
    torch.jit.save(encoder, str(tmp_path / "decoder_step.pt"))  # the wrong program under the step's name
    cases = [c for c in verify_bundle(str(tmp_path))["cases"] if c.get("artifact") == "decoder_step.pt"]
    assert cases and all(not c["passed"] and "sha256" in c["error"] for c in cases)
    (tmp_path / "decoder_step.pt").unlink()
    with pytest.raises(WorkerError) as caught:
        verify_bundle(str(tmp_path))
    assert caught.value.code == "verify_failed" and "decoder_step.pt" in caught.value.message


def test_split_option_values_are_checked() -> None:
    from tsexport_worker.errors import WorkerError
    from tsexport_worker.export import SplitSpec, parse_split

    assert parse_split({"kind": "encoder-decoder"}) == SplitSpec("encoder-decoder", 64)
    assert parse_split(None) is None
    for bad, field in [({"kind": "decoder-only"}, "spec.trace.split.kind"),
                       ({"kind": "encoder-decoder", "max_length": 1}, "spec.trace.split.max_length"),
                       ({"max_length": "16"}, "spec.trace.split.max_length")]:
        with pytest.raises(WorkerError) as caught:
            parse_split(bad)
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


# ---------------------------------------------------------------------------------------------------------------
# What cannot be traced faithfully: a clear error or warning with the setting that helps


@pytest.mark.parametrize("cls", ["GPT2LMHeadModel", "MarianMTModel"])
def test_a_returned_key_value_cache_is_refused_with_the_setting_that_helps(tmp_path: Path, cls: str) -> None:
    from workerkit import export_error

    if cls == "GPT2LMHeadModel":
        config, tensors = {**TINY_GPT2, "use_cache": True}, [random_ids([1, 8])]
    else:
        config = {**SPLIT_MODELS[cls], "use_cache": True}
        tensors = [random_ids([1, 8]), {**random_ids([1, 8]), "name": "decoder_input_ids"}]
    error = export_error(make_job(tmp_path, cls, config, tensors))
    assert (error.stage, error.code, error.field) == ("trace", "trace_failed", "spec.model.config.use_cache")
    assert "Cache" in error.message and "use_cache: false" in error.message


def test_an_untraceable_cache_with_torchscript_off_names_torchscript(tmp_path: Path) -> None:
    from workerkit import export_error

    job = make_job(tmp_path, "GPT2LMHeadModel", TINY_GPT2, [random_ids([1, 8])], model={"torchscript": False})
    error = export_error(job)
    assert (error.code, error.field) == ("trace_failed", "spec.model.torchscript")
    assert "use_cache: false" in error.message


def test_an_encoder_decoder_model_without_decoder_inputs_says_what_to_add(tmp_path: Path) -> None:
    from workerkit import export_error

    error = export_error(make_job(tmp_path, "MarianMTModel", SPLIT_MODELS["MarianMTModel"], [random_ids([1, 8])]))
    assert (error.code, error.field) == ("forward_failed", "spec.inputs.tensors")
    assert "decoder_input_ids" in error.message and "encoder-decoder" in error.message


def test_a_batch_size_frozen_into_gpt2_names_the_cause_and_the_fix(tmp_path: Path) -> None:
    from tsexport_worker.verify import verify_bundle

    run_export(make_job(tmp_path, "GPT2LMHeadModel", TINY_GPT2, [random_ids([1, 8])], check_shapes=[[2, 8]]))
    failed = verify_bundle(str(tmp_path))["cases"][1]
    assert failed["passed"] is False
    assert "out of bounds" in failed["error"] and "add an attention_mask tensor" in failed["error"]


def test_a_decoder_that_padding_changes_is_refused_for_the_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stands in for a decoder that looks ahead: the unpadded prefix gives other logits than the padded buffer.
    from tsexport_worker import export as export_module
    from tsexport_worker.errors import WorkerError

    real = export_module._eager_next_logits
    monkeypatch.setattr(export_module, "_eager_next_logits", lambda *args: real(*args) + 1.0)
    with pytest.raises(WorkerError) as caught:
        export_split(tmp_path, "MarianMTModel", SPLIT_MODELS["MarianMTModel"], check_shapes=[])
    assert (caught.value.code, caught.value.field) == ("trace_failed", "spec.trace.split")
    assert "not causal" in caught.value.message


def test_the_split_travels_in_the_job_through_the_serve_loop(tmp_path: Path) -> None:
    from workerkit import Worker

    job = make_job(tmp_path, "MarianMTModel", SPLIT_MODELS["MarianMTModel"], [
        random_ids([1, 8]), {**random_ids([1, 8]), "name": "decoder_input_ids"}])
    job["trace"]["split"] = SPLIT
    worker = Worker()
    try:
        _, message = worker.request("export", job=job)
    finally:
        worker.close()
    assert message["type"] == "result", message
    assert [a["file"] for a in message["data"]["artifacts"]] == ["encoder.pt", "decoder_step.pt"]
    assert (tmp_path / "decoder_step.pt").is_file()
