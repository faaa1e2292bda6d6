"""Every failure is one error naming a stage, a code and (where one is at fault) the manifest field."""

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


def test_unknown_input_name_suggests_forward_parameters(tmp_path: Path) -> None:
    tensors = [random_ids([1, 14]), {"name": "token_typ_ids", "from": "zeros", "shape": [1, 14]}]
    error = export_error(make_job(tmp_path, tensors=tensors))
    assert (error.code, error.stage, error.field) == ("unknown_input", "inputs", "spec.inputs.tensors[1].name")
    assert "did you mean 'token_type_ids'" in error.message


def test_an_exception_inside_forward_is_forward_failed(tmp_path: Path) -> None:
    # 14 tokens but only 8 position embeddings: BertModel.forward itself raises.
    config = {**TINY_BERT, "max_position_embeddings": 8}
    error = export_error(make_job(tmp_path, config=config))
    assert (error.code, error.stage) == ("forward_failed", "trace")
    assert error.message.startswith("the model's forward() failed")
    assert "Error" in error.message  # exception type and message
    assert "Traceback" in error.detail or "File" in error.detail


def test_a_wrong_input_dtype_is_forward_failed(tmp_path: Path) -> None:
    tensors = [{"name": "input_ids", "from": "random", "shape": [1, 14], "dtype": "float32"}]
    error = export_error(make_job(tmp_path, tensors=tensors))
    assert error.code == "forward_failed"


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


def test_strict_tracing_refuses_the_tracer_warnings_of_sdpa_attention(tmp_path: Path) -> None:
    # Measured: BertModel with sdpa attention on transformers 5.24 warns twice (a shape turned into a bool).
    error = export_error(make_job(tmp_path, model={"attn_implementation": "sdpa"}, strict=True))
    assert (error.code, error.stage, error.field) == ("strict_violation", "trace", "spec.trace.strict")
    assert "2 TracerWarning(s)" in error.message
    assert "sdpa_attention.py" in error.message
    assert not (tmp_path / "model.pt").exists()


def test_dict_outputs_under_strict_fail_when_torchscript_is_false(tmp_path: Path) -> None:
    error = export_error(make_job(tmp_path, model={"torchscript": False}, strict=True))
    assert (error.code, error.stage, error.field) == ("trace_failed", "trace", "spec.trace.strict")


def test_dict_outputs_trace_without_strict_when_torchscript_is_false(tmp_path: Path) -> None:
    from tsexport_worker.verify import verify_bundle

    data = run_export(make_job(tmp_path, model={"torchscript": False}, check_shapes=[[1, 5]]))
    assert data["adjusted_config"] == {}
    assert isinstance(torch.jit.load(str(tmp_path / "model.pt"))(torch.tensor([[5, 6, 7]])), dict)
    assert verify_bundle(str(tmp_path))["passed"]


@pytest.mark.parametrize(("hardware", "package"), [("inf1", "torch-neuron"), ("inf2", "torch-neuronx")])
def test_neuron_targets_need_their_package(tmp_path: Path, hardware: str, package: str) -> None:
    from tsexport_worker.errors import WorkerError
    from tsexport_worker.export import export
    from tsexport_worker.protocol import parse_job

    stages: list[str] = []
    with pytest.raises(WorkerError) as caught:
        export(parse_job(make_job(tmp_path, hardware=hardware)), lambda s, status, ms: stages.append(s))
    error = caught.value
    assert (error.code, error.stage, error.field) == ("target_unavailable", "load", "spec.target.hardware")
    assert f"target {hardware} needs {package} in the Python runtime (pip install {package}" in error.message
    assert stages == []  # refused before the model is loaded


def test_cuda_target_follows_the_runtime(tmp_path: Path) -> None:
    from tsexport_worker.verify import verify_bundle

    job = make_job(tmp_path, hardware="cuda")
    if torch.cuda.is_available():
        run_export(job)
        assert verify_bundle(str(tmp_path))["passed"]
    else:
        error = export_error(job)
        assert (error.code, error.field) == ("target_unavailable", "spec.target.hardware")
        assert "cuda" in error.message


@pytest.mark.parametrize("optimize", ["freeze", "optimize_for_inference"])
def test_optimized_modules_still_match(tmp_path: Path, optimize: str) -> None:
    from tsexport_worker.verify import verify_bundle

    run_export(make_job(tmp_path, optimize=optimize, check_shapes=[[2, 9]]))
    result = verify_bundle(str(tmp_path), 1e-5, 1e-4)
    assert result["passed"], result


def test_unexpected_exceptions_are_internal_and_the_worker_answers(tmp_path: Path, monkeypatch: Any) -> None:
    from tsexport_worker import export as export_module
    from tsexport_worker.__main__ import answer
    from tsexport_worker.protocol import Channel

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(export_module, "write_reference", broken)
    stream = io.StringIO()
    keep_going = answer(json.dumps({"id": 7, "op": "export", "job": make_job(tmp_path)}), Channel(stream))
    messages = [json.loads(line) for line in stream.getvalue().splitlines()]
    final = messages[-1]
    assert keep_going is True
    assert [m["type"] for m in messages].count("error") == 1 and final["type"] == "error"
    assert (final["id"], final["code"], final["stage"]) == (7, "internal", "reference")
    assert "RuntimeError: disk on fire" in final["message"] and "disk on fire" in final["detail"]


def test_a_job_with_a_bad_value_is_bad_request(tmp_path: Path) -> None:
    from tsexport_worker.errors import WorkerError
    from tsexport_worker.protocol import parse_job

    job = make_job(tmp_path)
    job["model"]["dtype"] = "float64"
    with pytest.raises(WorkerError) as caught:
        parse_job(job)
    assert (caught.value.code, caught.value.field) == ("bad_request", "spec.model.dtype")


def test_strict_tracing_passes_where_no_tracer_warning_is_raised(tmp_path: Path) -> None:
    # Measured: with eager attention and no attention_mask, BertModel traces without any TracerWarning.
    from tsexport_worker.verify import verify_bundle

    data = run_export(make_job(tmp_path, strict=True, check_shapes=[[2, 5]]))
    assert data["tracer_warnings"] == []
    assert data["attn_implementation"] == "eager"
    assert verify_bundle(str(tmp_path))["passed"]


def test_strict_tracing_with_an_attention_mask_warns_even_with_eager_attention(tmp_path: Path) -> None:
    tensors = [random_ids([1, 14]), {"name": "attention_mask", "from": "ones", "shape": [1, 14]}]
    error = export_error(make_job(tmp_path, tensors=tensors, strict=True))
    assert error.code == "strict_violation"
    assert "1 TracerWarning(s)" in error.message and "masking_utils.py" in error.message


def test_attn_implementation_in_config_is_known_and_must_agree(tmp_path: Path) -> None:
    same = run_export(make_job(tmp_path / "same", config={**TINY_BERT, "attn_implementation": "eager"}))
    assert same["warnings"] == []  # a known config key, stored as _attn_implementation
    error = export_error(make_job(tmp_path / "clash", config={**TINY_BERT, "attn_implementation": "sdpa"}))
    assert (error.code, error.field) == ("bad_config", "spec.model.config.attn_implementation")


def test_an_unusable_attn_implementation_is_bad_config(tmp_path: Path) -> None:
    error = export_error(make_job(tmp_path, model={"attn_implementation": "bogus"}))
    assert (error.code, error.stage, error.field) == ("bad_config", "load", "spec.model.attn_implementation")
    assert "bogus" in error.message
