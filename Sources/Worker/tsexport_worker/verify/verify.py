"""The verify_bundle op: reload model.pt with torch.jit.load and compare it with the recorded reference outputs.

Needs torch and safetensors only; it never imports transformers, so it exercises the saved file alone.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from .. import torchjit
from ..bundle import (
    AOTI_FILE,
    ENCODE_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    SAMPLE_FILE,
    read_record,
    recorded_device,
    sha256_file,
)
from ..errors import WorkerError, describe
from ..export.quantize import min_cosine
from ..outputs import flatten
from ..protocol import ProgressFn, no_progress

TINY = float(torch.finfo(torch.float32).tiny)


def compare(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> tuple[float, float, bool]:
    """(max abs error, max rel error, passed): an element passes when |a - e| <= atol + rtol * |e|.

    Equal values (NaN and NaN, inf and inf included) have no error; NaN on one side only is an infinite error.
    """
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    if a.numel() == 0:
        return 0.0, 0.0, True
    same = (a == e) | (torch.isnan(a) & torch.isnan(e))
    diff = torch.where(same, torch.zeros_like(a), (a - e).abs())
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    passed = bool((same | (diff <= atol + rtol * e.abs())).all())
    relative = diff / e.abs().clamp_min(TINY)
    return float(diff.max()), float(relative.max()), passed




def _case_order(name: str) -> tuple[int, int]:
    if name == "traced":
        return (0, 0)
    match = re.fullmatch(r"check(\d+)", name)
    return (1, int(match.group(1))) if match else (2, 0)


def _cases(sample_path: str, samples: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """Cases as written at export (with shapes and eager errors), else derived from the tensor names."""
    with safe_open(sample_path, framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "tsexport.cases" in metadata:
        cases = json.loads(metadata["tsexport.cases"])
        if isinstance(cases, list):
            return cases
    names = sorted({key.split("/", 1)[0] for key in samples}, key=_case_order)
    return [{"case": name, "shape": None} for name in names]


def _artifacts(sample_path: str) -> list[dict[str, Any]]:
    """The split artifacts (encoder.pt, decoder_step.pt) whose cases the sample file holds, from its metadata."""
    with safe_open(sample_path, framework="pt") as handle:
        metadata = handle.metadata() or {}
    try:
        listed = json.loads(metadata.get("tsexport.artifacts", "[]"))
    except ValueError:
        return []
    if not isinstance(listed, list):
        return []
    return [a for a in listed if isinstance(a, dict) and isinstance(a.get("file"), str)]


# Tracer warnings whose frozen decision is known to break a trace at other shapes, and the manifest setting that helps.
KNOWN_CAUSES = {
    "masking_utils.py:868": "the causal-mask code expanded the position ids to the traced batch size because no "
    "attention_mask was given; add an attention_mask tensor (from: ones) to spec.inputs.tensors",
}


def failure_hint(record: dict[str, Any]) -> str:
    """Why a trace may not run at a shape: the tracer warnings recorded at export, with a known cause if any."""
    tracer_warnings = [w for w in record.get("tracer_warnings") or [] if isinstance(w, str)]
    if not tracer_warnings:
        return ""
    for marker, cause in KNOWN_CAUSES.items():
        if any(marker in w for w in tracer_warnings):
            return f" (known cause: {cause})"
    first = tracer_warnings[0]
    return (
        f" (the tracer warned {len(tracer_warnings)} time(s) at export, first: {first}: a Python decision on a shape "
        "or value was frozen into the trace, which is then valid only at the traced shape)"
    )


def _device(record: dict[str, Any]) -> str:
    return "cuda" if recorded_device(record) == "cuda" and torch.cuda.is_available() else "cpu"


def run_case(
    module: torch.jit.ScriptModule,
    case: dict[str, Any],
    input_names: list[str],
    samples: dict[str, torch.Tensor],
    references: dict[str, torch.Tensor],
    tolerance: tuple[float, float],
    device: str,
) -> dict[str, Any]:
    name = case["case"]
    result: dict[str, Any] = {"case": name, "shape": case.get("shape"), "max_abs_error": None,
                              "max_rel_error": None, "passed": False}
    if case.get("error"):
        result["error"] = f"no reference outputs: {case['error']}"
        return result
    if case.get("rejected_by_model"):
        # The eager model itself refuses this input: nothing to compare, and no fault of the artifact.
        result["rejected_by_model"] = case["rejected_by_model"]
        return result
    try:
        args = [samples[f"{name}/{input_name}"].to(device) for input_name in input_names]
        expected = [references[f"{name}/output_{i}"] for i in range(_count(references, name))]
        with torch.no_grad():
            actual = [t for _, t in flatten(module(*args))]
    except Exception as exc:  # noqa: BLE001 - a trace that cannot run here is a failed case, not a crash
        result["error"] = describe(exc)
        return result
    if len(actual) != len(expected):
        result["error"] = f"the module returned {len(actual)} outputs; the reference has {len(expected)}"
        return result
    worst_abs, worst_rel, passed = 0.0, 0.0, True
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        if tuple(a.shape) != tuple(e.shape):
            result["error"] = f"output_{i} has shape {list(a.shape)}; the reference has {list(e.shape)}"
            return result
        abs_error, rel_error, ok = compare(a, e, *tolerance)
        worst_abs, worst_rel, passed = max(worst_abs, abs_error), max(worst_rel, rel_error), passed and ok
    result.update(
        max_abs_error=worst_abs, max_rel_error=worst_rel, passed=passed, min_cosine=min_cosine(actual, expected)
    )
    float32 = [f for i in range(len(actual)) if (f := references.get(f"{name}/float32_output_{i}")) is not None]
    if len(float32) == len(actual) and all(a.shape == f.shape for a, f in zip(actual, float32, strict=True)):
        # reduced precision: what it costs, against the float32 eager model (the Swift side applies the gate)
        result["float32"] = {
            "min_cosine": min_cosine(actual, float32),
            "max_abs_error": max(
                (compare(a, f, 0.0, 0.0)[0] for a, f in zip(actual, float32, strict=True)), default=0.0
            ),
        }
    return result


def _count(references: dict[str, torch.Tensor], case: str) -> int:
    return sum(1 for key in references if key.startswith(f"{case}/output_"))


def verify_bundle(bundle: str, atol: float, rtol: float, progress: ProgressFn = no_progress,
                  encode_min_cosine: float | None = None) -> dict[str, Any]:
    """Per-case parity of the bundle's model.pt against its reference outputs at the request's tolerance, plus the
    sha256 of model.pt; with `encode_min_cosine` (library sentence-transformers), model.pt against encode()'s
    embeddings of real text that the exporting process wrote."""
    progress("verify", "start", None)
    started = time.perf_counter()
    model_path = os.path.join(bundle, MODEL_FILE)
    aoti_path = os.path.join(bundle, AOTI_FILE)
    if not os.path.isfile(model_path) and os.path.isfile(aoti_path):
        return _verify_aoti_only(bundle, atol, rtol, progress, started)
    sample_path = os.path.join(bundle, SAMPLE_FILE)
    reference_path = os.path.join(bundle, REFERENCE_FILE)
    for path in (model_path, sample_path, reference_path):
        if not os.path.isfile(path):
            raise WorkerError("verify", "verify_failed", f"the bundle lacks {os.path.basename(path)} ({path})")
    record = read_record(bundle, "verify", "verify_failed")
    device = _device(record)
    try:
        module = torchjit.load(model_path, device)
        samples = load_file(sample_path)
        references = load_file(reference_path)
    except Exception as exc:
        raise WorkerError("verify", "verify_failed", f"could not read the bundle: {describe(exc)}") from exc
    cases = _cases(sample_path, samples)
    input_names = [entry["name"] for entry in record.get("input_signature", [])]
    if not input_names:
        with safe_open(sample_path, framework="pt") as handle:
            input_names = json.loads((handle.metadata() or {}).get("tsexport.inputs", "[]"))
    tolerance = (float(atol), float(rtol))
    results = [run_case(module, case, input_names, samples, references, tolerance, device) for case in cases]
    hint = failure_hint(record)
    for result in results:
        if result.get("error") and result["case"] != "traced" and not result["error"].startswith("no reference"):
            result["error"] += hint
    aoti: dict[str, Any] | None = None
    if os.path.isfile(aoti_path):
        # model.pt2 at every case, against the same eager references (the package runs on the CPU it was built for)
        from ..export.aoti import load_aoti  # torch._inductor only when there is a package

        try:
            package = load_aoti(aoti_path)
        except Exception as exc:
            raise WorkerError("verify", "verify_failed", f"could not load {AOTI_FILE}: {describe(exc)}") from exc
        aoti_cases = [run_case(package, case, input_names, samples, references, tolerance, device) for case in cases]
        aoti = {"cases": aoti_cases, "passed": all(c["passed"] for c in aoti_cases), "sha256": sha256_file(aoti_path)}
    artifact_sha: dict[str, str] = {}
    for artifact in _artifacts(sample_path):
        results += verify_artifact(bundle, artifact, record, samples, references, tolerance, device, artifact_sha)
    data: dict[str, Any] = {
        "cases": results,
        "passed": all(case["passed"] for case in results),
        "tolerance": {"atol": tolerance[0], "rtol": tolerance[1]},
        "sha256": sha256_file(model_path),
    }
    if artifact_sha:
        data["artifacts_sha256"] = artifact_sha
    if aoti is not None:
        data["aoti"] = aoti
    if encode_min_cosine is not None:
        encode_path = os.path.join(bundle, ENCODE_FILE)
        if not os.path.isfile(encode_path):
            raise WorkerError("verify", "verify_failed", f"the bundle lacks {ENCODE_FILE} ({encode_path}), which the "
                              "encode() comparison of library: sentence-transformers reads")
        from ..runtime.st_pipeline import compare_with_encode

        data["encode_check"] = compare_with_encode(module, encode_path, device, encode_min_cosine)
    generation = record.get("generation")
    if isinstance(generation, dict) and generation.get("cache"):
        data["generation"] = verify_generation(bundle, generation)
    progress("verify", "done", round((time.perf_counter() - started) * 1000))
    return data


def _verify_aoti_only(bundle: str, atol: float, rtol: float, progress: ProgressFn, started: float) -> dict[str, Any]:
    """A bundle whose artifact is model.pt2 alone: its cases are the bundle's cases (answered both as `cases` and
    as `aoti`), and `sha256` is model.pt2's."""
    from ..export.aoti import load_aoti  # torch._inductor only when there is a package

    aoti_path = os.path.join(bundle, AOTI_FILE)
    sample_path = os.path.join(bundle, SAMPLE_FILE)
    reference_path = os.path.join(bundle, REFERENCE_FILE)
    for path in (sample_path, reference_path):
        if not os.path.isfile(path):
            raise WorkerError("verify", "verify_failed", f"the bundle lacks {os.path.basename(path)} ({path})")
    record = read_record(bundle, "verify", "verify_failed")
    device = _device(record)
    try:
        package = load_aoti(aoti_path)
        samples = load_file(sample_path)
        references = load_file(reference_path)
    except Exception as exc:
        raise WorkerError(
            "verify", "verify_failed", f"could not read the bundle ({AOTI_FILE}): {describe(exc)}"
        ) from exc
    input_names = [entry["name"] for entry in record.get("input_signature", [])]
    tolerance = (float(atol), float(rtol))
    cases = [run_case(package, case, input_names, samples, references, tolerance, device)
             for case in _cases(sample_path, samples)]
    sha = sha256_file(aoti_path)
    passed = all(case["passed"] for case in cases)
    progress("verify", "done", round((time.perf_counter() - started) * 1000))
    return {
        "cases": cases, "passed": passed, "tolerance": {"atol": tolerance[0], "rtol": tolerance[1]},
        "sha256": sha, "artifact": AOTI_FILE, "aoti": {"cases": cases, "passed": passed, "sha256": sha},
    }


def verify_artifact(
    bundle: str,
    artifact: dict[str, Any],
    record: dict[str, Any],
    samples: dict[str, torch.Tensor],
    references: dict[str, torch.Tensor],
    tolerance: tuple[float, float],
    device: str,
    artifact_sha: dict[str, str],
) -> list[dict[str, Any]]:
    """The cases of one split artifact (encoder.pt, decoder_step.pt), each marked with its file.

    A missing file is `verify_failed` (the bundle is incomplete); a file whose sha256 differs from model.pt's record
    fails its cases.
    """
    file = os.path.basename(artifact["file"])
    path = os.path.join(bundle, file)
    if not os.path.isfile(path):
        raise WorkerError("verify", "verify_failed", f"the bundle lacks {file} ({path}), listed in its artifacts")
    sha = sha256_file(path)
    artifact_sha[file] = sha
    recorded = {a.get("file"): a.get("sha256") for a in record.get("artifacts") or [] if isinstance(a, dict)}
    cases = [c for c in artifact.get("cases") or [] if isinstance(c, dict) and "case" in c]
    if recorded.get(file) not in (None, sha):
        return [{"case": c["case"], "shape": c.get("shape"), "artifact": file, "max_abs_error": None,
                 "max_rel_error": None, "passed": False,
                 "error": f"{file} sha256 {sha} differs from the one recorded in model.pt"} for c in cases]
    try:
        module = torchjit.load(path, device)
    except Exception as exc:
        raise WorkerError("verify", "verify_failed", f"could not read {file}: {describe(exc)}") from exc
    names = [str(n) for n in artifact.get("inputs") or []]
    results = []
    for case in cases:
        result = run_case(module, case, names, samples, references, tolerance, device)
        result["artifact"] = file
        results.append(result)
    return results


def verify_generation(bundle: str, generation: dict[str, Any]) -> dict[str, Any]:
    """The recorded generate() tokens reproduced by the greedy loop over the cached artifacts alone (torch only),
    with each step's drift between the cached step's logits and the uncached model's (full.pt)."""
    from ..generation.generate_loop import greedy_with_drift, load_artifacts

    loaded = load_artifacts(bundle)
    prompts = []
    for ref in generation.get("reference", []):
        tokens, drifts = greedy_with_drift(loaded, [list(ref["prompt"])], int(ref["max_new_tokens"]))
        prompts.append({
            "prompt": ref["prompt"], "expected": ref["tokens"], "tokens": tokens[0],
            "equal": tokens[0] == ref["tokens"], "max_drift": max(drifts) if drifts else 0.0,
        })
    return {
        "prompts": prompts,
        "passed": bool(prompts) and all(p["equal"] for p in prompts),
        "max_drift": max((p["max_drift"] for p in prompts), default=0.0),
    }
