"""formats: [aoti] alone (model.pt2 is the bundle's artifact, no model.pt), bfloat16 and torchao int8 through
AOTInductor with freezing: export, verification in a fresh reading of the bundle, bench's loading, and a package that loads in a
Python without torchao. Two AOTInductor compiles in all (tiny random BERT)."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
import requestkit
import torch
from safetensors.torch import load_file
from workerkit import make_job, random_ids, run_export, run_python

# The plan's model.pt2 int8 job (fixtures/manifests/tiny-bert.yaml): formats [aoti], AOTInductor's settings, no guard,
# and torchao's quantize request.
AOTI_PLANNED = requestkit.export_job("tiny-bert-aoti-int8", "/")
TORCHAO = AOTI_PLANNED["target"]["quantize"]


def _extern_calls(package: Path) -> set[str]:
    """The aten/oneDNN functions the compiled wrapper calls (the package holds its generated C++ source)."""
    with zipfile.ZipFile(package) as archive:
        source = "".join(archive.read(n).decode() for n in archive.namelist() if n.endswith(".wrapper.cpp"))
    return set(re.findall(r"\b(aoti_torch_cpu_\w+)\(", source))


def _aoti_job(staging: Path, **fields):  # type: ignore[no-untyped-def]
    job = make_job(staging, tensors=[random_ids([2, 12])], **fields)
    job["formats"], job["aoti"] = AOTI_PLANNED["formats"], AOTI_PLANNED["aoti"]
    job["trace"]["guard"] = AOTI_PLANNED["trace"]["guard"]
    return job


def test_bfloat16_aoti_alone_writes_model_pt2_and_a_record_and_no_model_pt(tmp_path: Path) -> None:
    from tsexport_worker.bench.bench import load_bundle
    from tsexport_worker.verify.verify import verify_bundle

    data = run_export(_aoti_job(tmp_path, model={"dtype": "bfloat16"}))
    assert not (tmp_path / "model.pt").exists()
    assert (tmp_path / "model.pt2").stat().st_size == data["aoti"]["bytes"]
    assert data["aoti"]["inductor_configs"]["freezing"] is True
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        # freezing took effect: the weights are constants, prepacked for oneDNN's linear (GELU fused into it)
        # instead of an addmm on weights passed in at run time
        calls = _extern_calls(tmp_path / "model.pt2")
        assert "aoti_torch_cpu__linear_pointwise" in calls and "aoti_torch_cpu_addmm_out" not in calls, calls
    assert data["guarded"] is False and data["tracer_warnings"] == []
    record = json.loads((tmp_path / "record.json").read_text())
    assert [s["name"] for s in record["input_signature"]] == ["input_ids"]
    assert record["dtype"] == "bfloat16"
    verdict = verify_bundle(str(tmp_path), 5e-2, 5e-2)
    assert verdict["artifact"] == "model.pt2" and verdict["passed"] is True
    assert [c["case"] for c in verdict["cases"]] == ["traced"]
    traced = verdict["cases"][0]
    assert traced["max_abs_error"] < 5e-2
    assert 0.99 <= traced["float32"]["min_cosine"] < 1.0  # bfloat16 costs something, within the gate
    assert verdict["aoti"]["sha256"] == verdict["sha256"]
    bundle = load_bundle(str(tmp_path))
    assert bundle.file == "model.pt2"
    ids = load_file(str(tmp_path / "sample_inputs.safetensors"))["traced/input_ids"]
    with torch.no_grad():
        got = bundle.module(ids)
    expected = load_file(str(tmp_path / "reference_outputs.safetensors"))["traced/output_0"]
    assert got[0].dtype == torch.bfloat16
    assert float((got[0].float() - expected.float()).abs().max()) < 5e-2


def test_torchao_int8_through_aoti_keeps_quality_and_loads_without_torchao(tmp_path: Path) -> None:
    from tsexport_worker.export.quantize import min_cosine
    from tsexport_worker.verify.verify import verify_bundle

    data = run_export(_aoti_job(tmp_path, quantize=TORCHAO))
    q = data["quantize"]
    assert (q["library"], q["activations"], q["config"]) == ("torchao", "per_token", "Int8DynamicActivationInt8WeightConfig")
    assert q["candidates"] >= 12 and len(q["quantized"]) + len(q["kept_float"]) == q["candidates"]
    assert q["cosine_on_traced_inputs"] >= 0.995
    assert not (tmp_path / "model.pt").exists()
    verdict = verify_bundle(str(tmp_path), 1e-2, 1e-2)
    traced = verdict["cases"][0]
    assert traced["float32"]["min_cosine"] >= 0.99
    # the package runs in a Python where importing torchao fails
    script = """
        import sys
        sys.modules["torchao"] = None
        import torch
        from safetensors.torch import load_file
        package = torch._inductor.aoti_load_package(sys.argv[1] + "/model.pt2")
        ids = load_file(sys.argv[1] + "/sample_inputs.safetensors")["traced/input_ids"]
        with torch.no_grad():
            out = package(ids)
        torch.save(out[0], sys.argv[1] + "/out.pt")
        print("torchao" in sys.modules and sys.modules["torchao"] is not None)
    """
    ran = run_python(script, str(tmp_path))
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip().splitlines()[-1] == "False"
    got = torch.load(str(tmp_path / "out.pt"))
    float32 = load_file(str(tmp_path / "reference_outputs.safetensors"))
    expected = [v for k, v in float32.items() if k == "traced/float32_output_0"]
    assert expected, sorted(float32)
    cosine = min_cosine([got], [expected[0]])
    assert cosine is not None and cosine >= 0.99


def test_a_torchao_request_needs_library_and_activations() -> None:
    from tsexport_worker.errors import WorkerError
    from tsexport_worker.protocol import parse_quantize

    with pytest.raises(WorkerError) as raised:
        parse_quantize({**TORCHAO, "library": "bitsandbytes"})
    assert raised.value.field == "spec.target.quantize.library"
    missing = {k: v for k, v in TORCHAO.items() if k != "activations"}
    with pytest.raises(WorkerError) as raised:
        parse_quantize(missing)
    assert "activations" in raised.value.message


@pytest.mark.parametrize("mapping", ["symmetric", "asymmetric"])
def test_torchao_takes_the_activation_mapping_from_the_request_and_leaves_inductor_settings_alone(mapping: str) -> None:
    import torch._inductor.config as inductor
    from torchao.quantization import MappingType
    from tsexport_worker.export.quantize import _quantized
    from tsexport_worker.protocol import parse_quantize

    before = {k: getattr(inductor, k) for k in ("force_fuse_int_mm_with_mul", "coordinate_descent_tuning")}
    linear = torch.nn.Linear(16, 8)
    quantized = _quantized(linear, parse_quantize({**TORCHAO, "activation_mapping": mapping}))
    assert {k: getattr(inductor, k) for k in before} == before  # the compile settings are the request's alone
    kwargs = quantized.weight.act_quant_kwargs
    assert kwargs.mapping_type == (MappingType.ASYMMETRIC if mapping == "asymmetric" else MappingType.SYMMETRIC)
    x = torch.randn(3, 16)
    with torch.no_grad():
        cosine = torch.nn.functional.cosine_similarity(quantized(x), linear(x), dim=1)
    assert float(cosine.min()) > 0.99
    assert type(linear.weight) is torch.nn.Parameter  # the float32 layer is not changed
