"""The transformers TorchScript guide's own example, on the real pretrained MiniLM and on a random BERT-base."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
from workerkit import (
    GUIDE_IDS,
    GUIDE_SEGMENTS,
    GUIDE_SEGMENTS_13,
    GUIDE_TEXT,
    export_error,
    make_job,
    minilm_dir,
    run_export,
)


def guide_job(staging: Path, segments: list[int], **extra: Any) -> dict[str, Any]:
    return make_job(
        staging,
        model={"class": "BertModel", "pretrained": minilm_dir(), "pretrained_is_local": True, "config": {}},
        inputs={"tokenizer": minilm_dir(), "text": GUIDE_TEXT, "mask": [8]},
        tensors=[
            {"name": "input_ids", "from": "text"},
            {"name": "token_type_ids", "from": "values", "values": [segments]},
        ],
        strict=True,  # eager attention (the default) and no attention_mask: a trace without TracerWarnings
        **extra,
    )


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    staging = tmp_path_factory.mktemp("guide") / "minilm"
    return staging, run_export(guide_job(staging, GUIDE_SEGMENTS, check_shapes=[[1, 7], [2, 16]]))


def test_the_sentence_tokenises_as_the_guide_does(minilm: tuple[Path, dict[str, Any]]) -> None:
    _, data = minilm
    assert data["text"]["ids"] == GUIDE_IDS
    assert data["tracer_warnings"] == []
    assert data["text"]["tokens"][8] == "[MASK]"
    assert data["text"]["tokens"][11:13] == ["puppet", "##eer"]
    assert data["input_signature"] == [
        {"name": "input_ids", "dtype": "int64", "shape": [1, 14]},
        {"name": "token_type_ids", "dtype": "int64", "shape": [1, 14]},
    ]


def test_segment_ids_reach_token_type_ids_by_name(minilm: tuple[Path, dict[str, Any]]) -> None:
    from transformers import BertModel

    staging, _ = minilm
    traced = torch.jit.load(str(staging / "model.pt"))
    ids, segments = torch.tensor([GUIDE_IDS]), torch.tensor([GUIDE_SEGMENTS])
    eager = BertModel.from_pretrained(minilm_dir()).eval()
    with torch.no_grad():
        by_name = eager(input_ids=ids, token_type_ids=segments).last_hidden_state
        positional = eager(ids, segments).last_hidden_state  # the guide's call: segments land in attention_mask
        actual = traced(ids, segments)[0]
    assert torch.allclose(actual, by_name, atol=1e-5, rtol=1e-4)
    assert (actual - positional).abs().max() > 1e-2


def test_check_shapes_pass_for_the_pretrained_model(minilm: tuple[Path, dict[str, Any]]) -> None:
    from tsexport_worker.verify.verify import verify_bundle

    staging, _ = minilm
    result = verify_bundle(str(staging), 1e-5, 1e-4)
    assert [(c["case"], c["shape"], c["passed"]) for c in result["cases"]] == [
        ("traced", [1, 14], True), ("check0", [1, 7], True), ("check1", [2, 16], True),
    ]


def test_the_guides_thirteen_segment_ids_fail_before_tracing(tmp_path: Path) -> None:
    error = export_error(guide_job(tmp_path / "out", GUIDE_SEGMENTS_13))
    assert error.code == "shape_mismatch"
    assert error.stage == "inputs"
    assert error.field == "spec.inputs.tensors[1].values"
    assert "token_type_ids" in error.message
    assert "13" in error.message and "14" in error.message
    assert not (tmp_path / "out" / "model.pt").exists()


@pytest.mark.slow
def test_the_guides_random_bert_base_exports_and_verifies(tmp_path: Path) -> None:
    """The guide's BertConfig (hidden 768, 12 layers, 12 heads, 3072) traced on its 14 token ids, as values."""
    from tsexport_worker.verify.verify import verify_bundle

    config = {"vocab_size": 32000, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
              "intermediate_size": 3072}
    tensors = [
        {"name": "input_ids", "from": "values", "values": [GUIDE_IDS]},
        {"name": "token_type_ids", "from": "values", "values": [GUIDE_SEGMENTS]},
    ]
    started = time.perf_counter()
    data = run_export(make_job(tmp_path, "BertModel", config, tensors, strict=True, check_shapes=[[1, 7]]))
    exported = time.perf_counter() - started
    result = verify_bundle(str(tmp_path), 1e-4, 1e-4)
    verified = time.perf_counter() - started - exported
    print(f"BERT-base: export {exported:.1f}s {data['timings_ms']}, verify {verified:.1f}s")
    assert data["output_signature"][0] == {"name": "last_hidden_state", "dtype": "float32", "shape": [1, 14, 768]}
    assert data["output_signature"][1]["shape"] == [1, 768]
    assert all(case["passed"] for case in result["cases"]), result


def test_auto_class_with_overrides_on_top_of_the_pretrained_config(tmp_path: Path) -> None:
    from tsexport_worker.verify.verify import verify_bundle

    model = {"class": "AutoModel", "pretrained": minilm_dir(), "pretrained_is_local": True,
             "config": {"output_hidden_states": True}}
    data = run_export(make_job(tmp_path, model=model, check_shapes=[[2, 5]]))
    assert data["model_class"] == "BertModel"
    names = [o["name"] for o in data["output_signature"]]
    assert names == ["last_hidden_state", "pooler_output", *[f"hidden_states.{i}" for i in range(7)]]  # 6 layers
    assert data["warnings"] == []
    assert verify_bundle(str(tmp_path), 1e-5, 1e-4)["passed"]


def test_a_hub_id_goes_through_from_pretrained(tmp_path: Path) -> None:
    # The hub is unreachable here (HF_HUB_OFFLINE=1): the real hub code path answers, and the worker reports it.
    model = {"class": "BertModel", "pretrained": "google-bert/bert-base-uncased", "revision": "main", "config": {}}
    error = export_error(make_job(tmp_path, model=model))
    assert (error.code, error.stage, error.field) == ("load_failed", "load", "spec.model.pretrained")
    assert "google-bert/bert-base-uncased" in error.message
