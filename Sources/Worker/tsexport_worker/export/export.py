"""The export op: load → inputs → trace → serialize → reference, each a reported stage, run as the job says.

The stages live in their own modules (load, inputs, trace, reference, split); this one orchestrates them and writes
model.pt with its record. Imported only once the runtime is known to have torch, transformers and safetensors.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import torch

from .. import PROTOCOL_VERSION, WORKER_VERSION
from ..bundle import AOTI_FILE, ENCODE_FILE, MODEL_FILE, RECORD_FILE, RECORD_NAME, cpu_features
from ..errors import WorkerError, describe, traceback_tail
from ..generation.split import SplitResult, check_split_model, export_cached, save_split, trace_split
from ..outputs import signature
from ..protocol import Job, ProgressFn, no_progress
from ..runtime import probe
from ..runtime.dtypes import MODEL_DTYPES
from ..runtime.load import load_model, model_class
from . import inputs
from .aoti import export_aoti
from .envelope import Envelope, guard_inputs
from .guard import wrap
from .quantize import quantize
from .reference import write_reference
from .trace import ForwardWrapper, as_float32, optimize, run_eager, trace_module

__all__ = ["Stages", "export", "load_model", "write_reference"]


# ---------------------------------------------------------------------------------------------------------------
# Stages


class Stages:
    """Reports each stage's start and end, times it, and turns stray exceptions into `internal` errors."""

    def __init__(self, progress: ProgressFn) -> None:
        self.progress = progress
        self.timings_ms: dict[str, int] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.progress(name, "start", None)
        started = time.perf_counter()
        try:
            yield
        except WorkerError as error:
            if error.stage is None:
                error.stage = name
            raise
        except Exception as exc:  # an unexpected failure is still answered, as `internal`
            raise WorkerError(name, "internal", describe(exc), detail=traceback_tail(exc)) from exc
        elapsed = round((time.perf_counter() - started) * 1000)
        self.timings_ms[name] = elapsed
        self.progress(name, "done", elapsed)




# ---------------------------------------------------------------------------------------------------------------
# The op


def export(job: Job, progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Run the whole export job; returns the `result.data` of the protocol."""
    split_spec = job.trace.split
    try:
        probe.require("torch", "transformers", "safetensors")
        probe.require_target(job.target.hardware)  # before anything is loaded
    except WorkerError as error:
        error.stage = error.stage or "load"
        raise
    stages = Stages(progress)
    # formats: [aoti] alone makes model.pt2 the bundle's artifact: nothing is traced or saved with TorchScript
    torchscript = "torchscript" in job.formats
    device = "cuda" if job.target.hardware == "cuda" else "cpu"
    with contextlib.redirect_stdout(sys.stderr):
        float_model: torch.nn.Module | None = None
        with stages.stage("load"):
            if job.trace.float32_reference:
                # Reduced precision: the float32 model is the quality gate's reference; the artifact's model is a
                # copy cast to the job's dtype (as loading at that dtype would give) or quantized below.
                loaded = load_model(dataclasses.replace(job.model, dtype="float32"))
                float_model = loaded.model.to(device)
                model = float_model
                if job.model.dtype != "float32":
                    model = copy.deepcopy(float_model).to(MODEL_DTYPES[job.model.dtype])
            else:
                loaded = load_model(job.model)
                model = loaded.model.to(device)
        with stages.stage("inputs"):
            built = inputs.build(job.inputs, model, job.model.seed, trust_remote_code=job.model.trust_remote_code)
            example = [t.to(device) for t in built.tensors]
        float_wrapper = None
        if float_model is not None:
            float_wrapper = ForwardWrapper(
                float_model, built.names, tuple_outputs=job.model.torchscript, constants=job.model.forward
            ).eval()
        quantized: dict[str, Any] | None = None
        if job.target.quantize is not None and float_model is not None and float_wrapper is not None:
            with stages.stage("quantize"):
                float_outputs = [t for _, t in run_eager(float_wrapper, as_float32(example), job.model)]

                def outputs_of(candidate: torch.nn.Module) -> list[torch.Tensor]:
                    wrapped = ForwardWrapper(
                        candidate, built.names, tuple_outputs=job.model.torchscript, constants=job.model.forward
                    )
                    return [t for _, t in run_eager(wrapped, example, job.model)]

                model, quantized = quantize(float_model, outputs_of, float_outputs, job.target.quantize)
        with stages.stage("trace"):
            wrapper = ForwardWrapper(
                model, built.names, tuple_outputs=job.model.torchscript, constants=job.model.forward
            ).eval()
            cached = split_spec is not None and split_spec.cache
            if split_spec is not None and not cached:
                check_split_model(model, split_spec, built.names, job.target.hardware)
            eager_outputs = run_eager(wrapper, example, job.model)
            plan = Envelope.parse(job.trace.envelope)
            traced: Any = None
            tracer_warnings: list[str] = []
            if torchscript:
                traced, tracer_warnings = trace_module(wrapper, example, job.trace.strict, job.trace.api)
                traced = optimize(traced, job.target.optimize)
            guarded = job.trace.guard and plan is not None
            if plan is not None and guarded:
                # model.pt refuses shapes outside the planned envelope (narrowed later by the `guard` op if needed)
                ranges = plan.ranges(plan.traced_sizes(built))
                traced = wrap(traced, guard_inputs(plan, built, ranges))
            split_result: SplitResult | None = None
            cached_result: dict[str, Any] | None = None
            if split_spec is not None and cached:
                cached_result = export_cached(model, built, split_spec, job.staging_dir)
            elif split_spec is not None:
                split_result = trace_split(model, built, example, job, split_spec, device)
        if split_result is not None:
            loaded.warnings += split_result.warnings
        input_signature = signature(list(zip(built.names, built.tensors, strict=True)))
        attn_implementation = getattr(getattr(loaded.model, "config", None), "_attn_implementation", None)
        output_signature = signature(eager_outputs)
        versions = probe.versions()
        text = {"tokens": built.text.tokens, "ids": built.text.ids} if built.text else None
        worker_record: dict[str, Any] = {
            "protocol": PROTOCOL_VERSION,
            "worker_version": WORKER_VERSION,
            "model_class": model_class(loaded.model),
            "input_signature": input_signature,
            "output_signature": output_signature,
            "tracer_warnings": tracer_warnings,
            "warnings": loaded.warnings,
            "untied_parameters": loaded.untied_parameters,
            "adjusted_config": loaded.adjusted_config,
            "text": text,
            "torchscript": job.model.torchscript,
            "strict": job.trace.strict,
            "seed": job.model.seed,
            "dtype": job.model.dtype,
            "attn_implementation": attn_implementation,
            "target": {"hardware": job.target.hardware, "optimize": job.target.optimize, "device": device,
                       "quantize": job.target.quantize.scheme if job.target.quantize else "none"},
            "quantize": quantized,
            "versions": versions,
        }
        artifacts: list[dict[str, Any]] = []
        with stages.stage("serialize"):
            os.makedirs(job.staging_dir, exist_ok=True)
            if split_result is not None:
                artifacts = save_split(split_result, job, {**job.extra_record, **worker_record})
                worker_record["artifacts"] = artifacts
                worker_record["generation"] = split_result.generation
            if cached_result is not None:
                artifacts = cached_result["artifacts"]
                worker_record["artifacts"] = artifacts
                worker_record["generation"] = cached_result["generation"]
            record = {**job.extra_record, **worker_record}
            if not torchscript:
                # the record the verifying worker reads until the Swift side writes the final record.json
                with open(os.path.join(job.staging_dir, RECORD_FILE), "w", encoding="utf-8") as handle:
                    json.dump(record, handle, sort_keys=True)
            try:
                if traced is not None:
                    torch.jit.save(
                        traced,
                        os.path.join(job.staging_dir, MODEL_FILE),
                        _extra_files={RECORD_NAME: json.dumps(record, sort_keys=True).encode("utf-8")},
                    )
            except Exception as exc:
                raise WorkerError(
                    "serialize", "serialize_failed", f"torch.jit.save failed: {describe(exc)}",
                    detail=traceback_tail(exc),
                ) from exc
        with stages.stage("reference"):
            cases = write_reference(job.staging_dir, built, eager_outputs, wrapper, job, device, split_result,
                                    float_wrapper)
        if job.trace.encode_min_cosine is not None:
            with stages.stage("encode_reference"):
                _encode_references(job, built, model, plan)
        float_wrapper = float_model = None  # the float32 model is not needed past the references
        loaded.model = model  # (the same class, cast or quantized): nothing holds the float32 weights any more
        aoti: dict[str, Any] | None = None
        if "aoti" in job.formats:
            # torch.export over the envelope, AOTInductor into model.pt2 (progress stage export_aoti, timed)
            traced_sizes = plan.traced_sizes(built) if plan is not None else {}
            aoti = export_aoti(wrapper, example, built.names, plan, traced_sizes,
                               os.path.join(job.staging_dir, AOTI_FILE), progress,
                               job.aoti.inductor_configs if job.aoti is not None else None)
            stages.timings_ms["export_aoti"] = round(1000 * (aoti["export_seconds"] + aoti["compile_seconds"]))
    extra: dict[str, Any] = {}
    if split_result is not None:
        extra = {"artifacts": artifacts, "generation": split_result.generation}
    if cached_result is not None:
        extra = {"artifacts": artifacts, "generation": cached_result["generation"]}
    if loaded.pipeline_modules is not None:
        import sentence_transformers

        extra["library"] = {"name": "sentence-transformers", "version": sentence_transformers.__version__,
                            "modules": loaded.pipeline_modules}
    return {
        **extra,
        "input_signature": input_signature,
        "output_signature": output_signature,
        "cases": cases,
        "tracer_warnings": tracer_warnings,
        "warnings": loaded.warnings,
        "untied_parameters": loaded.untied_parameters,
        "adjusted_config": loaded.adjusted_config,
        "text": text,
        "model_class": model_class(loaded.model),
        "attn_implementation": attn_implementation,
        "hardware": job.target.hardware,
        "device": device,
        "cpu": cpu_features(),
        "guarded": guarded,
        "quantize": quantized,
        "aoti": aoti,
        "versions": versions,
        "timings_ms": stages.timings_ms,
    }


def _encode_references(job: Job, built: inputs.BuiltInputs, model: torch.nn.Module, plan: Envelope | None) -> None:
    """encode()'s embeddings of real text at the traced shape and every envelope point ([batch, sequence] from the
    points' sizes), with the tokens, into staging; the verifying process compares the saved model.pt with them."""
    from ..runtime.st_pipeline import encode_references

    ids = built.tensors[built.names.index("input_ids")]
    traced = (
        plan.traced_sizes(built) if plan is not None else {"batch": int(ids.shape[0]), "sequence": int(ids.shape[1])}
    )
    points: list[tuple[str, dict[str, int], int, int]] = [("traced", traced, traced["batch"], traced["sequence"])]
    for point in plan.points if plan is not None else []:
        if point.case == "traced":
            continue
        sizes = plan.resolve(point, traced) if plan is not None else {}
        points.append(
            (point.case, sizes, sizes.get("batch", traced["batch"]), sizes.get("sequence", traced["sequence"]))
        )
    encode_references(model, built.names, points, os.path.join(job.staging_dir, ENCODE_FILE))
