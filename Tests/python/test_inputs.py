"""The inputs stage (inputs.py): binding by name, tokenising, padding, masks, shape agreement."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from workerkit import GUIDE_TEXT, TINY_BERT, export_error, make_job, minilm_dir, random_ids, run_export


def test_unknown_input_name_suggests_forward_parameters(tmp_path: Path) -> None:
    tensors = [random_ids([1, 14]), {"name": "token_typ_ids", "from": "zeros", "shape": [1, 14]}]
    error = export_error(make_job(tmp_path, tensors=tensors))
    assert (error.code, error.stage, error.field) == ("unknown_input", "inputs", "spec.inputs.tensors[1].name")
    assert "did you mean 'token_type_ids'" in error.message


def test_a_missing_tokenizer_folder_is_tokenizer_failed(tmp_path: Path) -> None:
    job = make_job(
        tmp_path / "out", config={**TINY_BERT, "vocab_size": 30522},
        inputs={"tokenizer": str(tmp_path / "no-such-tokenizer"), "text": GUIDE_TEXT},
        tensors=[{"name": "input_ids", "from": "text"}],
    )
    error = export_error(job)
    assert (error.code, error.stage, error.field) == ("tokenizer_failed", "inputs", "spec.inputs.tokenizer")
    assert "no-such-tokenizer" in error.message


def _text_job(staging: Path, **inputs: Any) -> dict[str, Any]:
    return make_job(
        staging, config={**TINY_BERT, "vocab_size": 30522},
        inputs={"tokenizer": minilm_dir(), "text": GUIDE_TEXT, **inputs},
        tensors=[{"name": "input_ids", "from": "text"}, {"name": "attention_mask", "from": "text"}],
    )


def test_pad_to_pads_ids_and_attention_mask(tmp_path: Path) -> None:
    data = run_export(_text_job(tmp_path, pad_to=20, add_special_tokens=False))
    from safetensors.torch import load_file

    samples = load_file(str(tmp_path / "sample_inputs.safetensors"))
    assert samples["traced/input_ids"].tolist() == [[*data["text"]["ids"][:14], *[0] * 6]]
    assert samples["traced/attention_mask"].tolist() == [[1] * 14 + [0] * 6]


def test_add_special_tokens_adds_them_like_the_tokenizer(tmp_path: Path) -> None:
    data = run_export(
        make_job(tmp_path, config={**TINY_BERT, "vocab_size": 30522},
                 inputs={"tokenizer": minilm_dir(), "text": "Who was Jim Henson ?", "add_special_tokens": True},
                 tensors=[{"name": "input_ids", "from": "text"}])
    )
    assert data["text"]["ids"] == [101, 2040, 2001, 3958, 27227, 1029, 102]


def test_pad_to_shorter_than_the_text_is_a_shape_mismatch(tmp_path: Path) -> None:
    error = export_error(_text_job(tmp_path, pad_to=10))
    assert (error.code, error.field) == ("shape_mismatch", "spec.inputs.pad_to")
    assert "10" in error.message and "14" in error.message


def test_a_mask_position_outside_the_text(tmp_path: Path) -> None:
    error = export_error(_text_job(tmp_path, mask=[3, 40]))
    assert (error.code, error.field) == ("shape_mismatch", "spec.inputs.mask[1]")


def test_batch_sizes_must_agree(tmp_path: Path) -> None:
    tensors = [random_ids([1, 14]), {"name": "attention_mask", "from": "ones", "shape": [2, 14]}]
    error = export_error(make_job(tmp_path, tensors=tensors))
    assert (error.code, error.field) == ("shape_mismatch", "spec.inputs.tensors[1].shape")
    assert "batch size 2" in error.message
