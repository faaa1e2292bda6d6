"""quantize.py: the per-row cosine, the per-layer choice of what to quantize, and exports with reduced precision
that record the float32 eager model's outputs beside their own (the quality gate's reference)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requestkit
import torch
from safetensors.torch import load_file
from workerkit import TINY_BERT, make_job, run_export

# The plan's quantize request for model.pt (torch.ao), from fixtures/manifests/tiny-bert.yaml.
QUANTIZE = requestkit.export_job("tiny-bert-int8", "/")["target"]["quantize"]


def _spec(select: float = 0.995, weights: str = "per_channel"):  # type: ignore[no-untyped-def]
    from tsexport_worker.protocol import parse_quantize

    return parse_quantize({**QUANTIZE, "select_min_cosine": select, "weights": weights})


def test_row_cosine_is_per_example_and_takes_the_least() -> None:
    from tsexport_worker.export.quantize import min_cosine, row_cosine

    e = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]])  # [batch 2, seq 2, hidden 2]
    assert row_cosine(e.clone(), e) == pytest.approx(1.0)
    a = e.clone()
    a[1] = torch.tensor([[1.0, -1.0], [1.0, -1.0]])  # example 1 orthogonal to its reference, example 0 equal
    assert row_cosine(a, e) == pytest.approx(0.0, abs=1e-12)
    assert row_cosine(torch.zeros(2, 3), torch.zeros(2, 3)) == 1.0  # two zero rows are equal
    assert row_cosine(torch.zeros(1, 3), torch.ones(1, 3)) == 0.0
    assert row_cosine(torch.tensor([1, 2]), torch.tensor([1, 2])) is None  # integers are not compared
    assert row_cosine(torch.tensor([3.0, 4.0]), torch.tensor([4.0, 3.0])) == pytest.approx(24 / 25)  # 1-D: one row
    assert min_cosine([torch.tensor([1, 2])], [torch.tensor([1, 2])]) is None
    assert min_cosine([e, a], [e, e]) == pytest.approx(0.0, abs=1e-12)


def _tiny_bert() -> tuple[torch.nn.Module, list[torch.Tensor]]:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(**TINY_BERT)).eval()
    ids = torch.randint(0, TINY_BERT["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(1))
    return model, [ids]


def _run(model: torch.nn.Module, ids: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(input_ids=ids[0]).last_hidden_state]


@pytest.mark.parametrize("select", [0.9999999, 0.999, 0.99, 1e-9])
def test_the_chosen_layers_keep_the_cosine_and_the_rest_stay_float(select: float) -> None:
    from tsexport_worker.export.quantize import min_cosine, quantize

    model, ids = _tiny_bert()
    reference = _run(model, ids)
    quantized, record = quantize(model, lambda m: _run(m, ids), reference, _spec(select))
    linears = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear]
    assert record["candidates"] == len(linears) > 0
    kept = [k["name"] for k in record["kept_float"]]
    assert sorted(record["quantized"] + kept) == sorted(linears)
    measured = min_cosine(_run(quantized, ids), reference)
    assert measured is not None and measured >= select
    assert record["cosine_on_traced_inputs"] == pytest.approx(measured, abs=1e-9)
    for name in record["quantized"]:
        assert type(quantized.get_submodule(name)).__name__ == "Linear" and "dynamic" in type(quantized.get_submodule(name)).__module__
    for name in kept:
        assert type(quantized.get_submodule(name)) is torch.nn.Linear
    # the kept layers are listed least sensitive first (the order the search took them in)
    alone = [k["cosine_alone"] for k in record["kept_float"]]
    assert alone == sorted(alone, reverse=True)
    assert all(type(m) is torch.nn.Linear for n, m in model.named_modules() if n in linears)  # the input is untouched
    if select == 1e-9:
        assert kept == []  # everything keeps a positive cosine


def test_a_quantized_export_records_its_choice_and_verifies_against_both_models(tmp_path: Path) -> None:
    from tsexport_worker.bundle import RECORD_NAME
    from tsexport_worker.verify.verify import verify_bundle

    data = run_export(make_job(tmp_path, quantize=QUANTIZE, check_shapes=[[2, 9]]))
    record = data["quantize"]
    assert record["scheme"] == "dynamic_int8" and record["weights"] == "per_channel" and record["quantized"]
    assert record["cosine_on_traced_inputs"] >= 0.995
    graph = str(torch.jit.load(str(tmp_path / "model.pt")).inlined_graph)
    assert "quantized::linear_dynamic" in graph
    references = load_file(str(tmp_path / "reference_outputs.safetensors"))
    assert {"traced/output_0", "traced/float32_output_0", "check0/float32_output_0"} <= set(references)
    files = {RECORD_NAME: ""}
    torch.jit.load(str(tmp_path / "model.pt"), _extra_files=files)
    inside = json.loads(files[RECORD_NAME])
    assert inside["quantize"]["quantized"] == record["quantized"] and inside["target"]["quantize"] == "dynamic_int8"
    result = verify_bundle(str(tmp_path), 1e-5, 1e-4)
    traced = result["cases"][0]
    assert result["passed"] and traced["min_cosine"] == pytest.approx(1.0, abs=1e-9)  # faithful to its own model
    assert traced["float32"]["min_cosine"] == pytest.approx(record["cosine_on_traced_inputs"], abs=1e-6)
    assert traced["float32"]["max_abs_error"] > 0  # int8 does change the answer: measured, not assumed


def test_bfloat16_exports_record_float32_references_and_the_cost_of_precision(tmp_path: Path) -> None:
    from tsexport_worker.verify.verify import verify_bundle

    run_export(make_job(tmp_path, model={"dtype": "bfloat16"}, check_shapes=[[2, 9]]))
    references = load_file(str(tmp_path / "reference_outputs.safetensors"))
    assert references["traced/output_0"].dtype == torch.bfloat16
    assert references["traced/float32_output_0"].dtype == torch.float32
    result = verify_bundle(str(tmp_path), 5e-2, 5e-2)
    for case in result["cases"]:
        assert case["passed"] and case["min_cosine"] == pytest.approx(1.0, abs=1e-6)
        assert 0.99 < case["float32"]["min_cosine"] < 1.0  # bfloat16 costs a little, and it is measured
        assert case["float32"]["max_abs_error"] > 0


def test_float32_exports_write_no_second_reference(tmp_path: Path) -> None:
    from tsexport_worker.verify.verify import verify_bundle

    run_export(make_job(tmp_path))
    assert not [k for k in load_file(str(tmp_path / "reference_outputs.safetensors")) if "float32_output" in k]
    case = verify_bundle(str(tmp_path), 1e-5, 1e-4)["cases"][0]
    assert "float32" not in case and case["min_cosine"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize(("key", "value", "field"), [
    ("scheme", "static_int8", "spec.target.quantize.scheme"),
    ("modules", ["torch.nn.Conv1d"], "spec.target.quantize.modules"),
    ("weights", "per_row", "spec.target.quantize.weights"),
    ("select_min_cosine", 1.5, "spec.target.quantize.select_min_cosine"),
    ("activation_mapping", "affine", "spec.target.quantize.activation_mapping"),
    ("activation_mapping", "symmetric", "spec.target.quantize.activation_mapping"),  # torch.ao is asymmetric
])
def test_a_bad_quantize_request_is_bad_request_naming_the_key(key: str, value: object, field: str) -> None:
    from tsexport_worker.errors import WorkerError
    from tsexport_worker.protocol import parse_quantize

    with pytest.raises(WorkerError) as caught:
        parse_quantize({**QUANTIZE, key: value})
    assert (caught.value.code, caught.value.field) == ("bad_request", field)
