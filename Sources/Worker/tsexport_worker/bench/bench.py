"""The bench op: latency percentiles and peak memory of a bundle's artifact and of the eager model it came from.

The artifact is `model.pt` (torch.jit.load); the eager model is the request's `eager.model`, loaded the way the
export loaded it (bench_eager.py); when the request says it cannot be rebuilt (`eager: null`, `eager_missing`: why),
the artifact is benched alone, with that reason. Measurements are bench_timing.py's.

Inputs per shape: the bundle's own sample inputs where a recorded case has that shape, else tensors of that
[batch, sequence] whose values are drawn (seeded) from the traced sample inputs, like check shapes. For a padded
trace (its traced attention mask holds zeros), `padding` compares the padded artifact at its traced length, with
L real tokens, with the eager model on the same L tokens unpadded.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from .. import torchjit
from ..bundle import AOTI_FILE, MODEL_FILE, REFERENCE_FILE, SAMPLE_FILE, read_record, recorded_device
from ..errors import WorkerError, describe, traceback_tail
from ..protocol import BENCH_KEYS, ModelSpec, ProgressFn, no_progress, parse_model
from ..reader import check_keys
from ..runtime import probe
from .bench_eager import Eager, rebuild_eager
from .bench_timing import memory_method, status_kib, timed, trim_heap

STAGE = "bench"
DRAW_SEED = 20_240


# ---------------------------------------------------------------------------------------------------------------
# The request


@dataclass(frozen=True)
class BenchRequest:
    dir: str
    shapes: list[list[int]]
    runs: int
    warmup: int
    threads: int | None
    report: str | None
    eager: ModelSpec | None
    eager_missing: str | None


def _int_field(body: dict[str, Any], key: str, minimum: int, nullable: bool = False) -> int | None:
    value = body[key]
    if value is None and nullable:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise WorkerError(None, "bad_request", f"`{key}` must be an integer ≥ {minimum}, not {value!r}", field=key)
    return value


def _path_field(body: dict[str, Any], key: str, nullable: bool) -> str | None:
    value = body[key]
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not os.path.isabs(value):
        raise WorkerError(None, "bad_request", f"`{key}` must be an absolute path, not {value!r}", field=key)
    return value


def parse_bench_request(body: dict[str, Any]) -> BenchRequest:
    """The bench request's fields (every one required, no other); `bad_request` naming the first bad one."""
    fields = {key: value for key, value in body.items() if key not in ("id", "op")}
    check_keys(fields, None, BENCH_KEYS)
    bundle = _path_field(fields, "dir", nullable=False)
    assert bundle is not None
    shapes = fields["shapes"]
    ok = isinstance(shapes, list) and bool(shapes) and all(
        isinstance(s, list) and len(s) == 2
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in s)
        for s in shapes
    )
    if not ok:
        raise WorkerError(
            None, "bad_request", "`shapes` must be a non-empty list of [batch, sequence] sizes", field="shapes"
        )
    eager_raw, missing = fields["eager"], fields["eager_missing"]
    eager: ModelSpec | None = None
    if eager_raw is not None:
        if not isinstance(eager_raw, dict):
            raise WorkerError(None, "bad_request", "`eager` must be null or {\"model\": …}", field="eager")
        check_keys(eager_raw, "eager", ("model",))
        eager = parse_model(eager_raw["model"], "eager.model")
        if missing is not None:
            raise WorkerError(
                None, "bad_request", "`eager_missing` must be null when `eager` is given", field="eager_missing"
            )
    elif not isinstance(missing, str) or not missing:
        raise WorkerError(
            None, "bad_request", "`eager_missing` must say why when `eager` is null (a sentence)", field="eager_missing"
        )
    runs = _int_field(fields, "runs", 1)
    warmup = _int_field(fields, "warmup", 0)
    assert runs is not None and warmup is not None
    return BenchRequest(
        dir=bundle,
        shapes=[list(s) for s in shapes],
        runs=runs,
        warmup=warmup,
        threads=_int_field(fields, "threads", 1, nullable=True),
        report=_path_field(fields, "report", nullable=True),
        eager=eager,
        eager_missing=missing,
    )


# ---------------------------------------------------------------------------------------------------------------
# The bundle


@dataclass
class Bundle:
    dir: str
    file: str  # the artifact timed: model.pt, or model.pt2 when it is the bundle's only artifact
    record: dict[str, Any]
    module: Any
    names: list[str]
    samples: dict[str, torch.Tensor]
    references: dict[str, torch.Tensor]
    cases: list[dict[str, Any]]
    device: str
    load_ms: float
    load_rss_delta_bytes: int | None

    @property
    def traced(self) -> list[torch.Tensor]:
        return [self.samples[f"traced/{name}"] for name in self.names]

    @property
    def traced_shape(self) -> list[int]:
        for case in self.cases:
            if case.get("case") == "traced" and case.get("shape"):
                return list(case["shape"])
        tensor = self.traced[0]
        return [int(d) for d in tensor.shape[:2]]

    def case_inputs(self, shape: list[int]) -> tuple[str, list[torch.Tensor]] | None:
        for case in self.cases:
            name = case.get("case")
            if case.get("shape") == shape and all(f"{name}/{n}" in self.samples for n in self.names):
                return str(name), [self.samples[f"{name}/{n}"] for n in self.names]
        return None


def load_bundle(bundle: str) -> Bundle:
    model_path = os.path.join(bundle, MODEL_FILE)
    if not os.path.isfile(model_path) and os.path.isfile(os.path.join(bundle, AOTI_FILE)):
        model_path = os.path.join(bundle, AOTI_FILE)  # formats: [aoti] alone: model.pt2 is the artifact
    sample_path = os.path.join(bundle, SAMPLE_FILE)
    for path in (model_path, sample_path):
        if not os.path.isfile(path):
            raise WorkerError(
                STAGE, "load_failed", f"{bundle} is not a complete bundle: it lacks {os.path.basename(path)}"
            )
    record = read_record(bundle, STAGE, "load_failed")
    device = "cuda" if recorded_device(record) == "cuda" and torch.cuda.is_available() else "cpu"
    try:
        trim_heap()
        rss_before = status_kib("VmRSS")
        started = time.perf_counter()
        if model_path.endswith(AOTI_FILE):
            from ..export.aoti import load_aoti

            module = load_aoti(model_path)
        else:
            module = torchjit.load(model_path, device)
        load_ms = (time.perf_counter() - started) * 1000
        rss_after = status_kib("VmRSS")
        samples = load_file(sample_path)
        reference_path = os.path.join(bundle, REFERENCE_FILE)
        references = load_file(reference_path) if os.path.isfile(reference_path) else {}
        with safe_open(sample_path, framework="pt") as handle:
            metadata = handle.metadata() or {}
    except WorkerError:
        raise
    except Exception as exc:
        raise WorkerError(
            STAGE, "load_failed", f"could not load the bundle's artifact: {describe(exc)}", detail=traceback_tail(exc)
        ) from exc
    names = [entry["name"] for entry in record.get("input_signature", []) if isinstance(entry, dict)]
    if not names:
        names = json.loads(metadata.get("tsexport.inputs", "[]"))
    cases = json.loads(metadata.get("tsexport.cases", "[]")) or list(record.get("cases") or [])
    if not names or not all(f"traced/{n}" in samples for n in names):
        raise WorkerError(STAGE, "load_failed", f"{sample_path} holds no traced sample inputs")
    return Bundle(
        dir=bundle, file=os.path.basename(model_path), record=record, module=module, names=names, samples=samples,
        references=references,
        cases=cases, device=device, load_ms=round(load_ms, 3),
        load_rss_delta_bytes=(rss_after - rss_before) * 1024 if rss_after is not None and rss_before is not None
        else None,
    )


def manifest_spec(record: dict[str, Any]) -> dict[str, Any]:
    """The manifest's `spec` the record holds (`fingerprint_inputs.manifest.spec`), {} when it holds none."""
    spec = (((record.get("fingerprint_inputs") or {}).get("manifest") or {}).get("spec")) or {}
    return spec if isinstance(spec, dict) else {}


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def draw_inputs(traced: list[torch.Tensor], shape: list[int], seed: int) -> list[torch.Tensor]:
    """Inputs at [batch, sequence] (dims 0 and 1 replaced, others kept), values drawn from the traced ones."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for tensor in traced:
        new_shape = list(tensor.shape)
        for dim, size in enumerate(shape[: len(new_shape)]):
            new_shape[dim] = size
        pool = tensor.reshape(-1)
        if pool.numel() == 0:
            out.append(torch.zeros(new_shape, dtype=tensor.dtype))
            continue
        out.append(pool[torch.randint(0, pool.numel(), new_shape, generator=generator)])
    return out


@dataclass(frozen=True)
class Padding:
    mask_index: int | None
    real_columns: list[int]
    pad_columns: list[int]
    traced_length: int


def _text_padding(record: dict[str, Any], length: int) -> int:
    """Padding positions of a text padded without an attention_mask input: the trailing run of the pad token."""
    text = record.get("text") or {}
    tokens = text.get("tokens") if isinstance(text, dict) else None
    pad_to = (manifest_spec(record).get("inputs") or {}).get("pad_to")
    if not isinstance(tokens, list) or not isinstance(pad_to, int) or not tokens or len(tokens) != length:
        return 0
    last = tokens[-1]
    if "pad" not in str(last).lower():
        return 0
    run = 0
    for token in reversed(tokens):
        if token != last:
            break
        run += 1
    return run


def find_padding(bundle: Bundle) -> Padding | None:
    """How the traced inputs are padded, when they are: the columns of batch row 0 whose attention mask is 0 (or
    the text's trailing pad tokens when no attention_mask is an input)."""
    traced = bundle.traced
    if not traced or traced[0].dim() < 2:
        return None
    length = int(traced[0].shape[1])
    mask_index = next(
        (i for i, n in enumerate(bundle.names) if n.endswith("attention_mask") and traced[i].dim() == 2), None
    )
    if mask_index is not None:
        row = traced[mask_index][0]
        real = [j for j in range(length) if bool(row[j] != 0)]
        pads = [j for j in range(length) if bool(row[j] == 0)]
    else:
        count = _text_padding(bundle.record, length)
        real, pads = list(range(length - count)), list(range(length - count, length))
    if not pads or not real:
        return None
    return Padding(mask_index, real, pads, length)


def unpadded_inputs(bundle: Bundle, padding: Padding, batch: int, length: int, seed: int) -> list[torch.Tensor]:
    """`length` real tokens per row, no padding: the traced row's real columns (first `length` of them), extended
    with columns drawn from them when `length` exceeds them; an attention mask is all ones."""
    generator = torch.Generator().manual_seed(seed)
    real = padding.real_columns
    columns = real[:length] + [real[int(i)] for i in torch.randint(0, len(real), (max(0, length - len(real)),),
                                                                   generator=generator)]
    index = torch.tensor(columns, dtype=torch.long)
    out = []
    for i, tensor in enumerate(bundle.traced):
        if tensor.dim() < 2 or int(tensor.shape[1]) != padding.traced_length:
            out.append(draw_inputs([tensor], [batch, length], seed + i)[0])
            continue
        picked = tensor[:1].index_select(1, index)
        if i == padding.mask_index:
            picked = torch.ones_like(picked)
        out.append(picked.expand(batch, *picked.shape[1:]).contiguous())
    return out


def padded_inputs(bundle: Bundle, padding: Padding, unpadded: list[torch.Tensor]) -> list[torch.Tensor]:
    """The same real tokens followed by padding up to the traced length (the traced row's first pad column)."""
    out = []
    for i, (tensor, real) in enumerate(zip(bundle.traced, unpadded, strict=True)):
        if tensor.dim() < 2 or int(tensor.shape[1]) != padding.traced_length:
            out.append(real)
            continue
        extra = padding.traced_length - int(real.shape[1])
        pad = tensor[:1, padding.pad_columns[0] : padding.pad_columns[0] + 1]
        if i == padding.mask_index:
            pad = torch.zeros_like(pad)
        pad = pad.expand(int(real.shape[0]), extra, *pad.shape[2:])
        out.append(torch.cat([real, pad], dim=1).contiguous())
    return out



def bench(request: BenchRequest, progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Run the bench request; returns the protocol's `result.data` (and writes the report when asked)."""
    progress("load", "start", None)
    started = time.perf_counter()
    bundle = load_bundle(request.dir)
    eager = rebuild_eager(
        request.eager, request.eager_missing, bundle.names, bundle.traced, bundle.references, bundle.device
    )
    progress("load", "done", round((time.perf_counter() - started) * 1000))

    aoti: Any = None
    aoti_path = os.path.join(bundle.dir, AOTI_FILE)
    if os.path.isfile(aoti_path) and bundle.file != AOTI_FILE:
        from ..export.aoti import load_aoti

        aoti = load_aoti(aoti_path)
    previous_threads = torch.get_num_threads()
    threads = request.threads or previous_threads
    method = memory_method()
    progress(STAGE, "start", None)
    started = time.perf_counter()
    try:
        torch.set_num_threads(threads)
        shapes = request.shapes
        rows = []
        for k, shape in enumerate(shapes):
            found = bundle.case_inputs(shape)
            if found is not None:
                case, args = found
            else:
                case, args = None, draw_inputs(bundle.traced, shape, DRAW_SEED + k)
            args = [t.to(bundle.device) for t in args]
            row: dict[str, Any] = {"shape": shape, "case": case, "inputs": "sample" if case else "drawn"}
            row["artifact"] = timed(partial(bundle.module, *args), request.runs, request.warmup, bundle.device, method)
            if aoti is not None:  # model.pt2 (formats: aoti) on the same inputs
                row["aoti"] = timed(partial(aoti, *args), request.runs, request.warmup, bundle.device, method)
            row["eager"] = (
                timed(partial(eager.call, args), request.runs, request.warmup, bundle.device, method)
                if eager.call is not None else None
            )
            rows.append(row)
        padding_data = bench_padding(bundle, eager, shapes, request, method)
        generation = bench_generation(bundle, threads)
    finally:
        torch.set_num_threads(previous_threads)
    progress(STAGE, "done", round((time.perf_counter() - started) * 1000))

    spec = manifest_spec(bundle.record)
    data: dict[str, Any] = {
        "bundle": bundle.dir,
        "name": ((bundle.record.get("fingerprint_inputs") or {}).get("manifest") or {}).get("metadata", {}).get("name")
        or os.path.basename(bundle.dir.rstrip("/")),
        "model_class": bundle.record.get("model_class"),
        "inputs": bundle.names,
        "traced_shape": bundle.traced_shape,
        "device": bundle.device,
        "threads": threads,
        "threads_default": request.threads is None,
        "runs": request.runs,
        "warmup": request.warmup,
        "memory_method": method,
        "artifact": {"file": bundle.file, "load_ms": bundle.load_ms,
                     "load_rss_delta_bytes": bundle.load_rss_delta_bytes,
                     "optimize": (bundle.record.get("target") or {}).get("optimize")},
        "eager": {"available": eager.available, "reason": eager.reason, **eager.info},
        "pad_to": (spec.get("inputs") or {}).get("pad_to"),
        "shapes": rows,
        "padding": padding_data,
        "generation": generation,
        "aoti": {"file": AOTI_FILE} if aoti is not None else None,
        "versions": probe.versions(),
        "report": None,
    }
    if request.report:
        from .report import write_report

        write_report(request.report, data)
        data["report"] = request.report
    return data


def bench_padding(
    bundle: Bundle, eager: Eager, shapes: list[list[int]], request: BenchRequest, method: str | None
) -> dict[str, Any] | None:
    """What padding costs: the padded artifact at its traced length with L real tokens vs the eager model on the
    same L tokens unpadded, for L = the traced text's real length and every benched length up to the traced one."""
    padding = find_padding(bundle)
    if padding is None:
        return None
    batch = bundle.traced_shape[0] if bundle.traced_shape else 1
    lengths = sorted({len(padding.real_columns)} | {s[1] for s in shapes if s[1] <= padding.traced_length})
    rows = []
    for k, length in enumerate(lengths):
        unpadded = unpadded_inputs(bundle, padding, batch, length, DRAW_SEED + 500 + k)
        padded = [t.to(bundle.device) for t in padded_inputs(bundle, padding, unpadded)]
        unpadded = [t.to(bundle.device) for t in unpadded]
        rows.append({
            "length": length,
            "batch": batch,
            "artifact": timed(partial(bundle.module, *padded), request.runs, request.warmup, bundle.device, method),
            "eager": (
                timed(partial(eager.call, unpadded), request.runs, request.warmup, bundle.device, method)
                if eager.call is not None else None
            ),
        })
    return {
        "traced_length": padding.traced_length,
        "real_tokens": len(padding.real_columns),
        "masked": padding.mask_index is not None,
        "rows": rows,
    }


def bench_generation(bundle: Bundle, threads: int) -> dict[str, Any] | None:
    """Tokens per second of a cached generation bundle: the cached loop (prefill/encoder + step) against the
    uncached one (full.pt over the whole buffer each step), on the recorded prompts."""
    generation = bundle.record.get("generation")
    if not (isinstance(generation, dict) and generation.get("cache") and generation.get("reference")):
        return None
    from ..generation.generate_loop import tokens_per_second

    reference = generation["reference"][0]
    result = tokens_per_second(
        bundle.dir, [list(reference["prompt"])], int(reference["max_new_tokens"]), threads=threads
    )
    return {"max_length": generation.get("max_length"), "kind": generation.get("kind"), **result}
