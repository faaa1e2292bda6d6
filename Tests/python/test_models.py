"""Tiny random BERT, DistilBERT, RoBERTa and GPT-2 (LM head): tuple outputs, untied weights, a faithful artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from workerkit import TINY_BERT, TINY_DISTILBERT, TINY_GPT2, TINY_ROBERTA, make_job, random_ids, run_export, run_python

MODELS: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    # name: (class, config, expected untied parameters)
    "bert": ("BertModel", TINY_BERT, []),
    "bert-mlm": ("BertForMaskedLM", TINY_BERT, ["cls.predictions.decoder.weight", "cls.predictions.decoder.bias"]),
    "distilbert": ("DistilBertModel", TINY_DISTILBERT, []),
    "roberta": ("RobertaModel", TINY_ROBERTA, []),
    "gpt2-lm": ("GPT2LMHeadModel", TINY_GPT2, ["lm_head.weight"]),
}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("models")
    made = {}
    for name, (cls, config, _) in MODELS.items():
        staging = root / name
        mask = {"name": "attention_mask", "from": "values", "values": [[1] * 11 + [0] * 3]}
        job = make_job(staging, cls, config, [random_ids([1, 14]), mask], check_shapes=[[1, 7], [2, 20]])
        made[name] = (staging, run_export(job))
    return made


@pytest.mark.parametrize("name", list(MODELS))
def test_outputs_are_tuples_of_tensors(bundles: dict, name: str) -> None:
    staging, data = bundles[name]
    traced = torch.jit.load(str(staging / "model.pt"))
    output = traced(torch.randint(3, 100, (1, 14)), torch.ones(1, 14, dtype=torch.long))
    assert isinstance(output, tuple)
    assert all(isinstance(t, torch.Tensor) for t in output)
    assert len(output) == len(data["output_signature"])
    first = data["output_signature"][0]
    assert first["name"] == ("logits" if name in ("bert-mlm", "gpt2-lm") else "last_hidden_state")
    assert list(output[0].shape) == first["shape"]


@pytest.mark.parametrize("name", list(MODELS))
def test_tied_weights_are_untied_and_recorded(bundles: dict, name: str) -> None:
    staging, data = bundles[name]
    expected = MODELS[name][2]
    assert data["untied_parameters"] == expected
    extra = {"tsexport/record.json": ""}
    traced = torch.jit.load(str(staging / "model.pt"), _extra_files=extra)
    record = json.loads(extra["tsexport/record.json"])
    assert record["untied_parameters"] == expected
    assert record["fingerprint"] == "test"  # extra_record merged in
    assert [s["name"] for s in record["input_signature"]] == ["input_ids", "attention_mask"]
    params = dict(traced.named_parameters())
    for untied in expected:
        # the clone holds the same values but is its own tensor in the saved program
        source = {"lm_head.weight": "model.transformer.wte.weight",
                  "cls.predictions.decoder.weight": "model.bert.embeddings.word_embeddings.weight",
                  "cls.predictions.decoder.bias": "model.cls.predictions.bias"}[untied]
        clone = params[f"model.{untied}"]
        assert torch.equal(clone, params[source])
        assert clone.data_ptr() != params[source].data_ptr()


def test_the_config_flags_of_the_guide_are_recorded(bundles: dict) -> None:
    _, data = bundles["gpt2-lm"]
    assert data["adjusted_config"] == {"torchscript": True, "use_cache": False}


RELOAD = """
import json, sys
import torch, transformers
from safetensors.torch import load_file

report = {}
for entry in json.loads(sys.argv[1]):
    extra = {"tsexport/record.json": ""}
    traced = torch.jit.load(entry["dir"] + "/model.pt", _extra_files=extra)
    record = json.loads(extra["tsexport/record.json"])
    cls = getattr(transformers, entry["class"])
    config = cls.config_class(**entry["config"])
    torch.manual_seed(record["seed"])
    eager = cls(config).eval()
    samples = load_file(entry["dir"] + "/sample_inputs.safetensors")
    errors = []
    for case in ("traced", "check0", "check1"):
        names = [s["name"] for s in record["input_signature"]]
        args = [samples[case + "/" + n] for n in names]
        with torch.no_grad():
            expected = eager(**dict(zip(names, args)), use_cache=False) if "use_cache" in record["adjusted_config"] \
                else eager(**dict(zip(names, args)))
            actual = traced(*args)
        for i, out in enumerate(record["output_signature"]):
            errors.append(float((actual[i] - expected[out["name"]]).abs().max()))
    report[entry["name"]] = max(errors)
print(json.dumps(report))
"""


def test_artifacts_match_an_independent_eager_model_in_a_fresh_process(bundles: dict) -> None:
    entries = [
        {"name": name, "dir": str(staging), "class": MODELS[name][0], "config": MODELS[name][1]}
        for name, (staging, _) in bundles.items()
    ]
    proc = run_python(RELOAD, json.dumps(entries))
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(errors) == set(MODELS)
    for name, error in errors.items():
        assert error <= 1e-5, f"{name}: max abs error {error}"


def test_every_standard_architecture_records_its_tracer_warnings(bundles: dict) -> None:
    # Measured on transformers 5.24 / torch 2.13, eager attention with an attention_mask input: every one of these
    # warns (the mask utilities; RoBERTa also in torch's embedding padding_idx check), so strict: true refuses them.
    counts = {name: len(data["tracer_warnings"]) for name, (_, data) in bundles.items()}
    assert counts == {"bert": 1, "bert-mlm": 1, "distilbert": 1, "roberta": 3, "gpt2-lm": 1}
    for _, data in bundles.values():
        assert all(w.endswith(")") and ".py:" in w for w in data["tracer_warnings"])
        assert any("masking_utils.py" in w for w in data["tracer_warnings"])
