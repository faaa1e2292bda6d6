"""The load stage (load.py): class resolution, config values and keys, pickle weights, attention."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from workerkit import GUIDE_TEXT, TINY_BERT, export_error, make_job, minilm_dir, random_ids, run_export


def test_unknown_class_suggests_close_names(tmp_path: Path) -> None:
    error = export_error(make_job(tmp_path, "BertModle"))
    assert (error.code, error.stage, error.field) == ("unknown_class", "load", "spec.model.class")
    assert "did you mean" in error.message and "BertModel" in error.message


def test_a_class_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    error = export_error(make_job(tmp_path, "BertTokenizer"))
    assert (error.code, error.field) == ("unknown_class", "spec.model.class")
    assert "not a model class" in error.message


def test_auto_class_without_pretrained_needs_a_concrete_class(tmp_path: Path) -> None:
    error = export_error(make_job(tmp_path, "AutoModel"))
    assert (error.code, error.field) == ("bad_config", "spec.model.class")
    assert "concrete class" in error.message


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"hidden_act": "nope"}, "spec.model.config.hidden_act"),  # the config accepts it, the model fails on it
        ({"vocab_size": "abc"}, "spec.model.config.vocab_size"),  # the config's own type validation
        ({"hidden_size": 30, "num_attention_heads": 4}, "spec.model.config.hidden_size"),  # a model-side ValueError
    ],
)
def test_bad_config_values_name_their_key(tmp_path: Path, override: dict[str, Any], field: str) -> None:
    error = export_error(make_job(tmp_path, config={**TINY_BERT, **override}))
    assert (error.code, error.stage, error.field) == ("bad_config", "load", field)
    assert error.detail  # the traceback tail, for --verbose


def test_unknown_config_keys_are_warnings_with_their_field(tmp_path: Path) -> None:
    # transformers 5 configs store unknown keys silently; the guide's own `vocab_size_or_config_json_file` is one.
    config = {**TINY_BERT, "hidden_sizee": 64, "vocab_size_or_config_json_file": 32000}
    data = run_export(make_job(tmp_path, config=config))
    by_field = {w["field"]: w for w in data["warnings"]}
    assert set(by_field) == {"spec.model.config.hidden_sizee", "spec.model.config.vocab_size_or_config_json_file"}
    assert all(w["code"] == "unknown_config_key" for w in data["warnings"])
    assert "did you mean hidden_size" in by_field["spec.model.config.hidden_sizee"]["message"]
    assert data["output_signature"][0]["shape"] == [1, 14, 32]  # hidden_sizee changed nothing
    assert by_field["spec.model.config.vocab_size_or_config_json_file"]["message"] == (
        "config key 'vocab_size_or_config_json_file' is not declared by BertConfig: it is passed to the config, which "
        "stores it as an attribute, so only a model that reads 'vocab_size_or_config_json_file' uses it"
    )


def test_config_keys_answers_from_the_config_class_alone() -> None:
    from workerkit import Worker

    worker = Worker()
    try:
        _, bert = worker.request("config_keys", **{"class": "BertForSequenceClassification"})
        _, auto = worker.request("config_keys", **{"class": "AutoModel"})
        _, wrong = worker.request("config_keys", **{"class": "BertModle"})
        _, bad = worker.request("config_keys", **{"klass": "BertModel"})
    finally:
        worker.close()
    assert bert["type"] == "result", bert
    data = bert["data"]
    assert (data["class"], data["config_class"]) == ("BertForSequenceClassification", "BertConfig")
    assert {"hidden_size", "num_attention_heads", "vocab_size", "num_labels"} <= set(data["keys"])
    assert "hiden_size" not in data["keys"] and data["keys"] == sorted(data["keys"])
    assert auto["data"] == {"class": "AutoModel", "config_class": None, "keys": None}
    assert (wrong["type"], wrong["code"]) == ("error", "unknown_class"), wrong
    assert (bad["type"], bad["code"]) == ("error", "bad_request"), bad


def _pickle_only_model(folder: Path) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(**TINY_BERT))
    model.config.save_pretrained(str(folder))
    torch.save(model.state_dict(), str(folder / "pytorch_model.bin"))
    return folder


def test_pickle_weights_are_refused_unless_allowed(tmp_path: Path) -> None:
    folder = _pickle_only_model(tmp_path / "pickled")
    model = {"class": "BertModel", "pretrained": str(folder), "pretrained_is_local": True, "config": {}}
    error = export_error(make_job(tmp_path / "out", model=model))
    assert (error.code, error.stage, error.field) == ("pickle_refused", "load", "spec.model.allow_pickle")
    assert "spec.model.allow_pickle: true" in error.message and "--allow-pickle" in error.message
    data = run_export(make_job(tmp_path / "out", model={**model, "allow_pickle": True}))
    assert data["output_signature"][0]["shape"] == [1, 14, 32]


def test_attn_implementation_in_config_is_known_and_must_agree(tmp_path: Path) -> None:
    same = run_export(make_job(tmp_path / "same", config={**TINY_BERT, "attn_implementation": "eager"}))
    assert same["warnings"] == []  # a known config key, stored as _attn_implementation
    error = export_error(make_job(tmp_path / "clash", config={**TINY_BERT, "attn_implementation": "sdpa"}))
    assert (error.code, error.field) == ("bad_config", "spec.model.config.attn_implementation")


def test_an_unusable_attn_implementation_is_bad_config(tmp_path: Path) -> None:
    error = export_error(make_job(tmp_path, model={"attn_implementation": "bogus"}))
    assert (error.code, error.stage, error.field) == ("bad_config", "load", "spec.model.attn_implementation")
    assert "bogus" in error.message
