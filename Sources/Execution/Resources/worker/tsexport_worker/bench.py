"""The bench op: latency percentiles and peak memory of a bundle's artifact and of the eager model it came from.

The artifact is `model.pt` (torch.jit.load); the eager model is rebuilt from the bundle's record
(`fingerprint_inputs.manifest.spec.model`) the way the export loaded it, with the attention implementation the
export recorded. A bundle whose eager model cannot be rebuilt is benched on the artifact side alone, with the reason.

Inputs per shape: the bundle's own sample inputs where a recorded case has that shape, else tensors of that
[batch, sequence] whose values are drawn (seeded) from the traced sample inputs, like check shapes. For a padded
trace (its traced attention mask holds zeros), `padding` compares the padded artifact at its traced length, with
L real tokens, with the eager model on the same L tokens unpadded.

Peak memory: the resident set high-water mark (VmHWM in /proc/self/status), reset before each measurement by
writing 5 to /proc/self/clear_refs, minus the resident set just before it (after freed heap memory was returned
with malloc_trim). It covers the whole process (allocator caches, torch's thread pools), not only tensors.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from . import probe
from .errors import WorkerError, describe, traceback_tail
from .outputs import flatten
from .protocol import MODEL_FILE, RECORD_NAME, REFERENCE_FILE, SAMPLE_FILE, ModelSpec, ProgressFn, no_progress

RECORD_FILE = "record.json"
REPORT_FILE = "bench.html"
STAGE = "bench"
DEFAULT_RUNS = 50
DEFAULT_WARMUP = 5
DRAW_SEED = 20_240


# ---------------------------------------------------------------------------------------------------------------
# The request


@dataclass(frozen=True)
class BenchRequest:
    dir: str
    shapes: list[list[int]] | None = None
    runs: int = DEFAULT_RUNS
    warmup: int = DEFAULT_WARMUP
    threads: int | None = None
    manifest_dir: str | None = None
    report: str | None = None
    allow_remote_code: bool = False
    allow_pickle: bool = False


def _int_field(body: dict[str, Any], key: str, default: int | None, minimum: int) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise WorkerError(None, "bad_request", f"`{key}` must be an integer ≥ {minimum}, not {value!r}", field=key)
    return value


def _str_field(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not os.path.isabs(value):
        raise WorkerError(None, "bad_request", f"`{key}` must be an absolute path, not {value!r}", field=key)
    return value


def parse_bench_request(body: dict[str, Any]) -> BenchRequest:
    """The bench request's fields; `bad_request` naming the first bad one."""
    bundle = _str_field(body, "dir")
    if bundle is None:
        raise WorkerError(None, "bad_request", "bench needs `dir`, the bundle's absolute path", field="dir")
    shapes = body.get("shapes")
    if shapes is not None:
        ok = isinstance(shapes, list) and shapes and all(
            isinstance(s, list) and len(s) == 2
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in s)
            for s in shapes
        )
        if not ok:
            raise WorkerError(
                None, "bad_request", "`shapes` must be a non-empty list of [batch, sequence] sizes", field="shapes"
            )
    flags = {}
    for key in ("allow_remote_code", "allow_pickle"):
        value = body.get(key, False)
        if not isinstance(value, bool):
            raise WorkerError(None, "bad_request", f"`{key}` must be true or false", field=key)
        flags[key] = value
    return BenchRequest(
        dir=bundle,
        shapes=[list(s) for s in shapes] if shapes is not None else None,
        runs=_int_field(body, "runs", DEFAULT_RUNS, 1) or DEFAULT_RUNS,
        warmup=_int_field(body, "warmup", DEFAULT_WARMUP, 0) or 0,
        threads=_int_field(body, "threads", None, 1),
        manifest_dir=_str_field(body, "manifest_dir"),
        report=_str_field(body, "report"),
        **flags,
    )


# ---------------------------------------------------------------------------------------------------------------
# Memory and timing


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _trim_heap() -> None:
    """Give freed heap memory back to the system (glibc), so the next resident-set delta starts low."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).malloc_trim(0)


def _reset_peak() -> bool:
    """Reset VmHWM to the current resident set (Linux ≥ 4.0); False when that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def memory_method() -> str | None:
    """How peak memory is measured here: `vmhwm_reset`, `vmhwm_growth` (no reset: only growth beyond the process's
    earlier peak shows), or None (no /proc)."""
    if _status_kib("VmHWM") is None:
        return None
    return "vmhwm_reset" if _reset_peak() else "vmhwm_growth"


def percentile(sorted_values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return math.nan
    rank = p / 100 * (len(sorted_values) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def _ms(value: float) -> float:
    return round(value, 6)


def summarize(samples_ms: list[float]) -> dict[str, Any]:
    ordered = sorted(samples_ms)
    return {
        "p50_ms": _ms(percentile(ordered, 50)),
        "p90_ms": _ms(percentile(ordered, 90)),
        "p99_ms": _ms(percentile(ordered, 99)),
        "mean_ms": _ms(sum(ordered) / len(ordered)),
        "min_ms": _ms(ordered[0]),
        "max_ms": _ms(ordered[-1]),
        "runs": len(ordered),
    }


def measure(call: Callable[[], Any], runs: int, warmup: int, device: str, method: str | None) -> dict[str, Any]:
    """Latency over `runs` calls after `warmup` calls, and the peak resident set while they ran."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    _trim_heap()
    if method == "vmhwm_reset":
        _reset_peak()
    before_kib = _status_kib("VmRSS")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times: list[float] = []
    with torch.no_grad():
        for _ in range(warmup):
            call()
        sync()
        for _ in range(runs):
            started = time.perf_counter_ns()
            call()
            sync()
            times.append((time.perf_counter_ns() - started) / 1e6)
    stats = summarize(times)
    peak_kib = _status_kib("VmHWM")
    stats["peak_rss_bytes"] = peak_kib * 1024 if peak_kib is not None else None
    stats["peak_rss_delta_bytes"] = (
        max(0, peak_kib - before_kib) * 1024 if peak_kib is not None and before_kib is not None else None
    )
    if device == "cuda":
        stats["peak_cuda_bytes"] = int(torch.cuda.max_memory_allocated())
    return stats


def timed(call: Callable[[], Any], runs: int, warmup: int, device: str, method: str | None) -> dict[str, Any]:
    """`measure`, with a failure at this shape kept as an `error` (the request goes on)."""
    try:
        return measure(call, runs, warmup, device, method)
    except Exception as exc:  # noqa: BLE001 - e.g. a trace that cannot run at this batch size
        return {"error": describe(exc)}


# ---------------------------------------------------------------------------------------------------------------
# The bundle


@dataclass
class Bundle:
    dir: str
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
    sample_path = os.path.join(bundle, SAMPLE_FILE)
    for path in (model_path, sample_path):
        if not os.path.isfile(path):
            raise WorkerError(STAGE, "load_failed", f"{bundle} is not a complete bundle: it lacks {os.path.basename(path)}")
    record: dict[str, Any] = {}
    record_path = os.path.join(bundle, RECORD_FILE)
    if os.path.isfile(record_path):
        try:
            with open(record_path, encoding="utf-8") as handle:
                loaded = json.load(handle)
            record = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError) as exc:
            raise WorkerError(STAGE, "load_failed", f"could not read {record_path}: {describe(exc)}") from exc
    try:
        _trim_heap()
        rss_before = _status_kib("VmRSS")
        started = time.perf_counter()
        extra = {RECORD_NAME: ""}
        module = torch.jit.load(model_path, map_location="cpu", _extra_files=extra)
        embedded = json.loads(extra[RECORD_NAME]) if extra[RECORD_NAME] else {}
        record = {**(embedded if isinstance(embedded, dict) else {}), **record}  # record.json wins
        wanted = (record.get("target") or {}).get("device", "cpu")
        device = "cuda" if wanted == "cuda" and torch.cuda.is_available() else "cpu"
        if device != "cpu":
            module = torch.jit.load(model_path, map_location=device)
        module.eval()
        load_ms = (time.perf_counter() - started) * 1000
        rss_after = _status_kib("VmRSS")
        samples = load_file(sample_path)
        reference_path = os.path.join(bundle, REFERENCE_FILE)
        references = load_file(reference_path) if os.path.isfile(reference_path) else {}
        with safe_open(sample_path, framework="pt") as handle:
            metadata = handle.metadata() or {}
    except WorkerError:
        raise
    except Exception as exc:  # noqa: BLE001
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
        dir=bundle, record=record, module=module, names=names, samples=samples, references=references,
        cases=cases, device=device, load_ms=round(load_ms, 3),
        load_rss_delta_bytes=(rss_after - rss_before) * 1024 if rss_after is not None and rss_before is not None
        else None,
    )


# ---------------------------------------------------------------------------------------------------------------
# The eager model


class EagerMissing(Exception):
    """Why the eager model cannot be rebuilt (a sentence for the user)."""


def manifest_spec(record: dict[str, Any]) -> dict[str, Any]:
    spec = (((record.get("fingerprint_inputs") or {}).get("manifest") or {}).get("spec")) or {}
    return spec if isinstance(spec, dict) else {}


def manifest_folder(record: dict[str, Any], given: str | None) -> tuple[str | None, str]:
    """The manifest's folder and how it was found: the request's `manifest_dir`, the record's `manifest_dir`, or
    the folder of an absolute `manifest_file`."""
    if given:
        return given, "request"
    recorded = record.get("manifest_dir")
    if isinstance(recorded, str) and os.path.isabs(recorded):
        return recorded, "record manifest_dir"
    file = record.get("manifest_file")
    if isinstance(file, str) and os.path.isabs(file):
        return os.path.dirname(file), "record manifest_file"
    return None, "unknown"


def _pretrained_was_local(record: dict[str, Any], value: str) -> bool:
    files = (record.get("fingerprint_inputs") or {}).get("files") or {}
    if any(str(key).startswith("spec.model.pretrained/") for key in files):
        return True
    return value.startswith(("/", "./", "../", "~"))


def eager_spec(record: dict[str, Any], request: BenchRequest) -> tuple[ModelSpec, dict[str, Any]]:
    """The ModelSpec the export loaded, from the record; EagerMissing when it cannot be rebuilt."""
    model = manifest_spec(record).get("model")
    if not isinstance(model, dict) or not isinstance(model.get("class"), str):
        raise EagerMissing("the record has no manifest model (fingerprint_inputs.manifest.spec.model)")
    info: dict[str, Any] = {}
    pretrained = model.get("pretrained")
    local = False
    if isinstance(pretrained, str):
        folder, how = manifest_folder(record, request.manifest_dir)
        if _pretrained_was_local(record, pretrained):
            local = True
            expanded = os.path.expanduser(pretrained)
            if not os.path.isabs(expanded):
                if folder is None:
                    raise EagerMissing(
                        f"spec.model.pretrained {pretrained!r} is relative to the manifest's folder, which the record "
                        f"does not give (manifest_file {record.get('manifest_file')!r} is relative to the folder the "
                        "apply ran in); pass --manifest-dir"
                    )
                expanded = os.path.normpath(os.path.join(folder, expanded))
            if not os.path.isdir(expanded):
                raise EagerMissing(
                    f"the pretrained folder {expanded} (spec.model.pretrained {pretrained!r}"
                    + (f", resolved against {folder}" if not os.path.isabs(os.path.expanduser(pretrained)) else "")
                    + ") does not exist; it may have moved since the export"
                )
            pretrained = expanded
        info.update(pretrained=pretrained, manifest_dir=folder, manifest_dir_from=how)
    if model.get("trust_remote_code") and not request.allow_remote_code:
        raise EagerMissing("the model sets trust_remote_code: true; rebuilding it needs --allow-remote-code")
    if model.get("allow_pickle") and not request.allow_pickle:
        raise EagerMissing("the model sets allow_pickle: true; rebuilding it needs --allow-pickle")
    attention = record.get("attn_implementation") or model.get("attn_implementation") or "eager"
    config = dict(model.get("config") or {})
    config.pop("attn_implementation", None)  # the recorded implementation decides
    spec = ModelSpec(
        class_name=model["class"],
        pretrained=pretrained if isinstance(pretrained, str) else None,
        pretrained_is_local=local,
        revision=model.get("revision") if isinstance(model.get("revision"), str) else None,
        config=config,
        torchscript=bool(model.get("torchscript", True)),
        seed=int(model.get("seed", 0)),
        dtype=str(model.get("dtype", "float32")),
        attn_implementation=str(attention),
        trust_remote_code=bool(model.get("trust_remote_code", False)),
        allow_pickle=bool(model.get("allow_pickle", False)),
    )
    info["attn_implementation"] = spec.attn_implementation
    return spec, info


@dataclass
class Eager:
    available: bool
    reason: str | None = None
    call: Callable[[list[torch.Tensor]], Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def rebuild_eager(bundle: Bundle, request: BenchRequest) -> Eager:
    """The eager model as the export loaded it; unavailable (with the reason) when that fails."""
    try:
        spec, info = eager_spec(bundle.record, request)
    except EagerMissing as missing:
        return Eager(False, str(missing))
    if "transformers" in probe.missing_packages():
        return Eager(False, "transformers cannot be imported in this Python runtime", info=info)
    from .export import ForwardWrapper, load_model

    _trim_heap()
    rss_before = _status_kib("VmRSS")
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            loaded = load_model(spec)
    except WorkerError as error:
        return Eager(False, f"the eager model could not be rebuilt: {error.message}", info=info)
    except Exception as exc:  # noqa: BLE001
        return Eager(False, f"the eager model could not be rebuilt: {describe(exc)}", info=info)
    model = loaded.model.to(bundle.device)
    info["load_ms"] = round((time.perf_counter() - started) * 1000, 3)
    rss_after = _status_kib("VmRSS")
    info["load_rss_delta_bytes"] = (rss_after - rss_before) * 1024 if rss_after and rss_before else None
    wrapper = ForwardWrapper(model, bundle.names, tuple_outputs=spec.torchscript).eval()
    info["model_class"] = type(model).__name__
    # Is it the model the artifact came from? Compare with the recorded reference outputs at the traced shape.
    expected = [bundle.references[k] for k in sorted(
        (k for k in bundle.references if k.startswith("traced/output_")), key=lambda k: int(k.rsplit("_", 1)[1])
    )]
    if expected:
        try:
            with torch.no_grad():
                actual = [t for _, t in flatten(wrapper.call_model(*[t.to(bundle.device) for t in bundle.traced]))]
            errors = [
                float((a.detach().cpu().double() - e.double()).abs().max()) if a.shape == e.shape else math.inf
                for a, e in zip(actual, expected, strict=False)
            ]
            info["reference_max_abs_error"] = max(errors) if errors and len(actual) == len(expected) else None
        except Exception as exc:  # noqa: BLE001
            info["reference_max_abs_error"] = None
            info["reference_error"] = describe(exc)
    return Eager(True, None, call=lambda args: wrapper.call_model(*args), info=info)


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


# ---------------------------------------------------------------------------------------------------------------
# The op


def default_shapes(bundle: Bundle) -> list[list[int]]:
    shapes: list[list[int]] = []
    for case in bundle.cases:
        shape = case.get("shape")
        if isinstance(shape, list) and len(shape) == 2 and shape not in shapes:
            shapes.append(list(shape))
    return shapes or [bundle.traced_shape]


def bench(request: BenchRequest, progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Run the bench request; returns the protocol's `result.data` (and writes the report when asked)."""
    progress("load", "start", None)
    started = time.perf_counter()
    bundle = load_bundle(request.dir)
    eager = rebuild_eager(bundle, request)
    progress("load", "done", round((time.perf_counter() - started) * 1000))

    previous_threads = torch.get_num_threads()
    threads = request.threads or previous_threads
    method = memory_method()
    progress(STAGE, "start", None)
    started = time.perf_counter()
    try:
        torch.set_num_threads(threads)
        shapes = request.shapes or default_shapes(bundle)
        rows = []
        for k, shape in enumerate(shapes):
            found = bundle.case_inputs(shape)
            if found is not None:
                case, args = found
            else:
                case, args = None, draw_inputs(bundle.traced, shape, DRAW_SEED + k)
            args = [t.to(bundle.device) for t in args]
            row: dict[str, Any] = {"shape": shape, "case": case, "inputs": "sample" if case else "drawn"}
            row["artifact"] = timed(lambda a=args: bundle.module(*a), request.runs, request.warmup, bundle.device,
                                    method)
            row["eager"] = (
                timed(lambda a=args: eager.call(a), request.runs, request.warmup, bundle.device, method)  # type: ignore[misc]
                if eager.available else None
            )
            rows.append(row)
        padding_data = bench_padding(bundle, eager, shapes, request, method)
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
        "artifact": {"file": MODEL_FILE, "load_ms": bundle.load_ms, "load_rss_delta_bytes": bundle.load_rss_delta_bytes,
                     "optimize": (bundle.record.get("target") or {}).get("optimize")},
        "eager": {"available": eager.available, "reason": eager.reason, **eager.info},
        "pad_to": (spec.get("inputs") or {}).get("pad_to"),
        "shapes": rows,
        "padding": padding_data,
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
            "artifact": timed(lambda a=padded: bundle.module(*a), request.runs, request.warmup, bundle.device, method),
            "eager": (
                timed(lambda a=unpadded: eager.call(a), request.runs, request.warmup, bundle.device, method)  # type: ignore[misc]
                if eager.available else None
            ),
        })
    return {
        "traced_length": padding.traced_length,
        "real_tokens": len(padding.real_columns),
        "masked": padding.mask_index is not None,
        "rows": rows,
    }
