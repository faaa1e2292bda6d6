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


def test_remade_ids_keep_their_ends_and_follow_the_mask() -> None:
    """structure.keep_structure: the traced row's first and last real tokens stay at the ends of every remade row,
    the tokens between are drawn from the inner ones (never an end token), and padding follows the mask."""
    from tsexport_worker.inputs import BuiltInputs
    from tsexport_worker.protocol import TensorSpec
    from tsexport_worker.structure import keep_structure

    specs = [TensorSpec(0, "input_ids", "values", "int64", None, None, None, None),
             TensorSpec(1, "attention_mask", "values", "int64", None, None, None, None)]
    traced = [torch.tensor([[101, 7, 8, 9, 102, 0, 0]]), torch.tensor([[1, 1, 1, 1, 1, 0, 0]])]
    built = BuiltInputs(specs=specs, tensors=traced, text=None)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    drawn = [torch.full((3, 4), 102), mask]
    ids, kept_mask = keep_structure(built, drawn, seed=3, pad_id=None)
    assert torch.equal(kept_mask, mask)
    assert ids[0, 0] == 101 and ids[0, 2] == 102 and ids[0, 3] == 0 and int(ids[0, 1]) in (7, 8, 9)
    assert ids[1].tolist() == [102, 0, 0, 0]  # one real token: the last one wins
    assert ids[2, 0] == 101 and ids[2, 3] == 102 and all(int(t) in (7, 8, 9) for t in ids[2, 1:3])
    # Random tensors are remade as declared, untouched.
    random_specs = [TensorSpec(0, "input_ids", "random", "int64", [1, 7], None, None, None)]
    same = keep_structure(BuiltInputs(random_specs, traced[:1], None), [torch.full((2, 3), 5)], seed=3, pad_id=None)
    assert same[0].tolist() == [[5, 5, 5], [5, 5, 5]]
