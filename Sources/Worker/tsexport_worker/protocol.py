"""The JSON-lines protocol: messages out, requests in, and the export job as typed values.

Field paths in errors are manifest paths (`spec.model.config.hidden_act`), because that is what the user edits; the
job mirrors the manifest's `spec` one to one, so `job.model.seed` is `spec.model.seed`.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from .bundle import MODEL_FILE, RECORD_NAME, REFERENCE_FILE, SAMPLE_FILE  # noqa: F401  (re-exported)
from .errors import WorkerError
from .reader import Reader, check_keys

OPS = ("probe", "export", "verify_bundle", "guard", "inspect", "config_keys", "deploy", "bench", "shutdown")
STAGES = (
    "load", "inputs", "quantize", "trace", "serialize", "reference", "verify", "guard", "export_aoti", "deploy", "bench"
)
HARDWARE = ("cpu", "cuda", "inf1", "inf2")
TRACE_APIS = ("torch.jit.trace", "torch.neuron.trace", "torch_neuronx.trace")
SPLIT_KINDS = ("encoder-decoder", "decoder-only")
OPTIMIZE = ("none", "freeze", "optimize_for_inference")
MODEL_DTYPES = ("float32", "float16", "bfloat16")
TENSOR_DTYPES = ("int64", "int32", "float32", "float16", "bfloat16", "bool")
SOURCES = ("text", "values", "random", "zeros", "ones")


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: non-finite floats travel as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def encode(message: dict[str, Any]) -> str:
    """One protocol line (no embedded newline: json.dumps escapes them)."""
    return json.dumps(json_safe(message), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class Channel:
    """Writes protocol messages, one flushed line each; the only writer of the protocol stream."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = encode(message)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def hello(self, fields: dict[str, Any]) -> None:
        self.send({"type": "hello", **fields})

    def progress(self, request_id: int, stage: str, status: str, elapsed_ms: int | None = None) -> None:
        message: dict[str, Any] = {"type": "progress", "id": request_id, "stage": stage, "status": status}
        if elapsed_ms is not None:
            message["elapsed_ms"] = elapsed_ms
        self.send(message)

    def result(self, request_id: int | None, data: dict[str, Any]) -> None:
        self.send({"type": "result", "id": request_id, "ok": True, "data": data})

    def error(self, request_id: int | None, error: WorkerError) -> None:
        self.send(error.to_message(request_id))


ProgressFn = Callable[[str, str, int | None], None]


def no_progress(stage: str, status: str, elapsed_ms: int | None) -> None:
    """A progress callback that reports nothing (in-process use)."""


@dataclass(frozen=True)
class Request:
    id: int | None
    op: str
    body: dict[str, Any]


def parse_request(line: str) -> Request:
    """A request line; `bad_request` (carrying the id when one could be read) when it is not one."""
    try:
        body = json.loads(line)
    except json.JSONDecodeError as exc:
        raise WorkerError(None, "bad_request", f"the request is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise WorkerError(None, "bad_request", "a request must be a JSON object")
    request_id = body.get("id")
    if not (isinstance(request_id, int) and not isinstance(request_id, bool) and request_id > 0):
        raise WorkerError(None, "bad_request", "a request needs an `id`, a positive integer")
    op = body.get("op")
    return Request(id=request_id, op=op if isinstance(op, str) else repr(op), body=body)


def request_body(request: Request, keys: tuple[str, ...]) -> dict[str, Any]:
    """The request's fields other than `id` and `op`, checked to be exactly `keys`."""
    check_keys(request.body, None, ("id", "op", *keys))
    return {key: request.body[key] for key in keys}


# ---------------------------------------------------------------------------------------------------------------
# The export job


MODEL_KEYS = (
    "class", "pretrained", "pretrained_is_local", "revision", "config", "torchscript", "seed", "dtype",
    "attn_implementation", "trust_remote_code", "allow_pickle", "library", "forward",
)
LIBRARIES = ("transformers", "sentence-transformers")
TENSOR_KEYS = ("name", "from", "dtype", "shape", "values", "low", "high", "axes")
INPUTS_KEYS = (
    "tokenizer", "tokenizer_is_local", "tokenizer_revision", "text", "add_special_tokens", "mask", "pad_to", "tensors",
)
TRACE_KEYS = (
    "api", "strict", "check_shapes", "split", "tolerance", "envelope", "float32_reference", "encode_check", "guard",
)
ENCODE_CHECK_KEYS = ("min_cosine",)
SPLIT_KEYS = ("kind", "max_length", "cache", "drift_limit", "padding_bound", "refuse_tracer_warnings")
PADDING_BOUND_KEYS = ("absolute", "relative")
TOLERANCE_KEYS = ("atol", "rtol", "min_cosine")
TARGET_KEYS = ("hardware", "optimize", "quantize")
QUANTIZE_KEYS = ("scheme", "library", "activations", "activation_mapping", "modules", "weights", "select_min_cosine")
# torch.ao: torch.ao.nn.quantized.dynamic.Linear (per-tensor activations; TorchScript); torchao:
# Int8DynamicActivationInt8WeightConfig (per-token activations, per-channel weights; torch.export / AOTInductor).
QUANTIZE_LIBRARIES = ("torch.ao", "torchao")
QUANTIZE_ACTIVATIONS = ("per_tensor", "per_token")
# How activations map to int8: symmetric (zero point 0, s8) or asymmetric (a zero point per token or tensor, u8).
# torch.ao's dynamic Linear is always asymmetric (quint8 with a zero point).
QUANTIZE_MAPPINGS = ("symmetric", "asymmetric")
QUANTIZE_SCHEMES = ("dynamic_int8",)
QUANTIZE_MODULES = ("torch.nn.Linear",)
QUANTIZE_WEIGHTS = ("per_channel", "per_tensor")
BENCH_KEYS = ("dir", "shapes", "runs", "warmup", "threads", "report", "eager", "eager_missing")
JOB_KEYS = ("name", "model", "inputs", "trace", "target", "formats", "aoti", "staging_dir", "extra_record")
AOTI_KEYS = ("inductor_configs",)
FORMATS = ("torchscript", "aoti")


@dataclass(frozen=True)
class ModelSpec:
    class_name: str
    pretrained: str | None
    pretrained_is_local: bool
    revision: str | None
    config: dict[str, Any]
    torchscript: bool
    seed: int
    dtype: str
    attn_implementation: str
    trust_remote_code: bool
    allow_pickle: bool
    # "transformers" (the class is the model) or "sentence-transformers" (the folder's modules.json pipeline).
    library: str
    # Constant keyword arguments given to forward beside the input tensors (e.g. interpolate_pos_encoding).
    forward: dict[str, Any]


@dataclass(frozen=True)
class TensorSpec:
    index: int
    name: str
    source: str
    dtype: str
    shape: list[int] | None
    values: Any
    low: float | None
    high: float | None
    # The named axis of each dimension (null entries: fixed), as the Swift side resolved them; dimensions that share
    # a name must agree. None: only dimension 0 (batch) is named.
    axes: list[str | None] | None = None

    @property
    def path(self) -> str:
        return f"spec.inputs.tensors[{self.index}]"


@dataclass(frozen=True)
class InputsSpec:
    tensors: list[TensorSpec]
    tokenizer: str | None
    tokenizer_is_local: bool
    tokenizer_revision: str | None
    text: str | None
    add_special_tokens: bool
    mask: list[int]
    pad_to: int | None


@dataclass(frozen=True)
class SplitSpec:
    """`spec.trace.split`: which extra artifacts to export (only `encoder-decoder` for now) and at what length."""

    kind: str
    max_length: int
    # Key/value cache as explicit tensors in and out of the step (prefill/encoder + step + full, cache_split.py).
    cache: bool
    # The bounds the Swift side decided (its SplitBounds): a traced part may differ from its eager module at its own
    # example by at most drift_limit; the padded decoder step from the unpadded prefix by at most
    # padding_absolute + padding_relative * max |logit|; a part whose trace warned is refused when
    # refuse_tracer_warnings is set.
    drift_limit: float
    padding_absolute: float
    padding_relative: float
    refuse_tracer_warnings: bool


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    # The quality gate the Swift side judges (null: none); the worker only reports the cosines.
    min_cosine: float | None


@dataclass(frozen=True)
class TraceSpec:
    api: str
    strict: bool
    check_shapes: list[list[int]]
    split: SplitSpec | None
    tolerance: Tolerance
    # The serving envelope the Swift side planned (axes, tensors, points, pad_masks), or null; carried as given.
    envelope: dict[str, Any] | None
    # Also record the float32 eager model's outputs (reduced precision: the quality gate's reference).
    float32_reference: bool
    # sentence-transformers: the cosine the artifact's sentence_embedding must keep to the library's encode() on real
    # text at every envelope point (null: no such check).
    encode_min_cosine: float | None
    # Wrap model.pt in the envelope guard (the Swift side's `guarded`: torch.jit.trace artifacts only).
    guard: bool


@dataclass(frozen=True)
class QuantizeSpec:
    scheme: str
    library: str
    activations: str
    activation_mapping: str
    modules: list[str]
    weights: str
    # The chosen layers must keep at least this cosine to the float32 outputs on the traced inputs.
    select_min_cosine: float


@dataclass(frozen=True)
class TargetSpec:
    hardware: str
    optimize: str
    quantize: QuantizeSpec | None


@dataclass(frozen=True)
class AotiSpec:
    inductor_configs: dict[str, Any]


@dataclass(frozen=True)
class Job:
    name: str
    model: ModelSpec
    inputs: InputsSpec
    trace: TraceSpec
    target: TargetSpec
    # The artifacts to write: "torchscript" (model.pt), "aoti" (model.pt2), or both.
    formats: list[str]
    # With "aoti": how AOTInductor compiles (torch._inductor config keys and values, set as given); else None.
    aoti: AotiSpec | None
    staging_dir: str
    extra_record: dict[str, Any]


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def parse_model(data: Any, path: str = "spec.model") -> ModelSpec:
    """The model of an export job (or of a bench request's `eager`, under another path)."""
    r = Reader(data, path, MODEL_KEYS)
    return ModelSpec(
        class_name=r.text("class"),
        pretrained=r.opt_text("pretrained"),
        pretrained_is_local=r.flag("pretrained_is_local"),
        revision=r.opt_text("revision"),
        config=r.mapping("config"),
        torchscript=r.flag("torchscript"),
        seed=r.integer("seed"),
        dtype=r.choice("dtype", MODEL_DTYPES),
        attn_implementation=r.text("attn_implementation"),
        trust_remote_code=r.flag("trust_remote_code"),
        allow_pickle=r.flag("allow_pickle"),
        library=r.choice("library", LIBRARIES),
        forward=r.mapping("forward"),
    )


def _parse_tensor(index: int, data: Any) -> TensorSpec:
    r = Reader(data, f"spec.inputs.tensors[{index}]", TENSOR_KEYS)
    source = r.choice("from", SOURCES)
    shape = r.opt_array("shape")
    if shape is not None and not (_int_list(shape) and all(d >= 0 for d in shape)):
        raise WorkerError(None, "bad_request", f"`{r.field('shape')}` must be a list of sizes", field=r.field("shape"))
    if source in ("random", "zeros", "ones") and shape is None:
        raise WorkerError(
            None, "bad_request", f"`{r.field('shape')}` is required for from: {source}", field=r.field("shape")
        )
    values = r.raw("values")
    if values is not None and not (isinstance(values, (list, int, float))):
        raise WorkerError(
            None, "bad_request", f"`{r.field('values')}` must be list or int or float or bool, not {values!r}",
            field=r.field("values"),
        )
    if source == "values" and values is None:
        raise WorkerError(
            None, "bad_request", f"`{r.field('values')}` is required for from: values", field=r.field("values")
        )
    return TensorSpec(
        index=index,
        name=r.text("name"),
        source=source,
        dtype=r.choice("dtype", TENSOR_DTYPES),
        shape=shape,
        values=values,
        low=r.opt_number("low"),
        high=r.opt_number("high"),
        axes=_parse_axes(r.raw("axes"), r.field("axes")),
    )


def _parse_axes(data: Any, field: str) -> list[str | None] | None:
    if data is None:
        return None
    if not isinstance(data, list) or not all(a is None or isinstance(a, str) for a in data):
        raise WorkerError(None, "bad_request", f"`{field}` must be a list of axis names or nulls", field=field)
    return list(data)


def _parse_inputs(data: Any) -> InputsSpec:
    r = Reader(data, "spec.inputs", INPUTS_KEYS)
    tensors = r.array("tensors")
    if not tensors:
        raise WorkerError(
            None, "bad_request", "`spec.inputs.tensors` needs at least one tensor", field=r.field("tensors")
        )
    mask = r.array("mask")
    if not _int_list(mask):
        raise WorkerError(None, "bad_request", "`spec.inputs.mask` must be a list of positions", field=r.field("mask"))
    return InputsSpec(
        tensors=[_parse_tensor(i, t) for i, t in enumerate(tensors)],
        tokenizer=r.opt_text("tokenizer"),
        tokenizer_is_local=r.flag("tokenizer_is_local"),
        tokenizer_revision=r.opt_text("tokenizer_revision"),
        text=r.opt_text("text"),
        add_special_tokens=r.flag("add_special_tokens"),
        mask=list(mask),
        pad_to=r.opt_integer("pad_to"),
    )


def parse_split(raw: Any) -> SplitSpec | None:
    """`spec.trace.split`: null or {kind, max_length}; `bad_request` with its manifest path when wrong."""
    if raw is None:
        return None
    r = Reader(raw, "spec.trace.split", SPLIT_KEYS)
    kind = r.choice("kind", SPLIT_KINDS)
    max_length = r.integer("max_length")
    if max_length < 2:
        raise WorkerError(
            None, "bad_request", "`spec.trace.split.max_length` must be at least 2 (the start token and one more)",
            field="spec.trace.split.max_length",
        )
    drift_limit = _positive(r, "drift_limit")
    bound = Reader(r.raw("padding_bound"), r.field("padding_bound"), PADDING_BOUND_KEYS)
    cache = r.flag("cache")
    if kind == "decoder-only" and not cache:
        raise WorkerError(
            None, "bad_request", "`spec.trace.split.cache` must be true for kind decoder-only (its step is cached)",
            field="spec.trace.split.cache",
        )
    return SplitSpec(kind=kind, max_length=max_length, cache=cache, drift_limit=drift_limit,
                     padding_absolute=_positive(bound, "absolute"), padding_relative=_positive(bound, "relative"),
                     refuse_tracer_warnings=r.flag("refuse_tracer_warnings"))


def _positive(r: Reader, key: str) -> float:
    value = r.number(key)
    if not (math.isfinite(value) and value > 0):
        raise WorkerError(None, "bad_request", f"`{r.field(key)}` must be a number > 0", field=r.field(key))
    return value


def parse_tolerance(data: Any, path: str) -> Tolerance:
    """{atol, rtol, min_cosine}: atol and rtol numbers ≥ 0, min_cosine null or in (0, 1]."""
    r = Reader(data, path, TOLERANCE_KEYS)
    values = {}
    for key in ("atol", "rtol"):
        value = r.number(key)
        if not (math.isfinite(value) and value >= 0):
            raise WorkerError(None, "bad_request", f"`{r.field(key)}` must be a number ≥ 0", field=r.field(key))
        values[key] = value
    min_cosine = r.opt_number("min_cosine")
    if min_cosine is not None and not 0 < min_cosine <= 1:
        raise WorkerError(
            None, "bad_request", f"`{r.field('min_cosine')}` must be in (0, 1]", field=r.field("min_cosine")
        )
    return Tolerance(atol=values["atol"], rtol=values["rtol"], min_cosine=min_cosine)


def parse_quantize(raw: Any) -> QuantizeSpec | None:
    """`spec.target.quantize`: null or {scheme, library, activations, activation_mapping, modules, weights,
    select_min_cosine}."""
    if raw is None:
        return None
    r = Reader(raw, "spec.target.quantize", QUANTIZE_KEYS)
    modules = r.array("modules")
    if not modules or not all(isinstance(m, str) and m in QUANTIZE_MODULES for m in modules):
        raise WorkerError(
            None, "bad_request", f"`{r.field('modules')}` must list module types among {', '.join(QUANTIZE_MODULES)}",
            field=r.field("modules"),
        )
    select = r.number("select_min_cosine")
    if not 0 < select <= 1:
        raise WorkerError(
            None, "bad_request", f"`{r.field('select_min_cosine')}` must be in (0, 1]",
            field=r.field("select_min_cosine"),
        )
    library, mapping = r.choice("library", QUANTIZE_LIBRARIES), r.choice("activation_mapping", QUANTIZE_MAPPINGS)
    if library == "torch.ao" and mapping != "asymmetric":
        raise WorkerError(
            None, "bad_request", f"`{r.field('activation_mapping')}` must be asymmetric with library torch.ao",
            field=r.field("activation_mapping"),
        )
    return QuantizeSpec(scheme=r.choice("scheme", QUANTIZE_SCHEMES), library=library,
                        activations=r.choice("activations", QUANTIZE_ACTIVATIONS), activation_mapping=mapping,
                        modules=list(modules), weights=r.choice("weights", QUANTIZE_WEIGHTS), select_min_cosine=select)


def _parse_trace(data: Any) -> TraceSpec:
    r = Reader(data, "spec.trace", TRACE_KEYS)
    shapes = r.array("check_shapes")
    for i, shape in enumerate(shapes):
        if not (_int_list(shape) and len(shape) == 2 and all(d > 0 for d in shape)):
            raise WorkerError(
                None, "bad_request", f"`spec.trace.check_shapes[{i}]` must be [batch, sequence]",
                field=f"spec.trace.check_shapes[{i}]",
            )
    return TraceSpec(
        api=r.choice("api", TRACE_APIS),
        strict=r.flag("strict"),
        check_shapes=[list(s) for s in shapes],
        split=parse_split(r.raw("split")),
        tolerance=parse_tolerance(r.raw("tolerance"), r.field("tolerance")),
        envelope=r.opt_mapping("envelope"),
        float32_reference=r.flag("float32_reference"),
        encode_min_cosine=_parse_encode_check(r.raw("encode_check")),
        guard=r.flag("guard"),
    )


def _parse_encode_check(data: Any) -> float | None:
    if data is None:
        return None
    r = Reader(data, "spec.trace.encode_check", ENCODE_CHECK_KEYS)
    return float(r.number("min_cosine"))


def _parse_target(data: Any) -> TargetSpec:
    r = Reader(data, "spec.target", TARGET_KEYS)
    return TargetSpec(hardware=r.choice("hardware", HARDWARE), optimize=r.choice("optimize", OPTIMIZE),
                      quantize=parse_quantize(r.raw("quantize")))


def parse_job(data: Any) -> Job:
    """The export job of a request; `bad_request` with the manifest path of the first missing, unknown or bad key."""
    if not isinstance(data, dict):
        raise WorkerError(None, "bad_request", "an export request needs `job`, an object", field="job")
    r = Reader(data, "job", JOB_KEYS)
    staging = r.text("staging_dir")
    if not os.path.isabs(staging):
        raise WorkerError(None, "bad_request", "`job.staging_dir` must be an absolute path", field="job.staging_dir")
    trace = _parse_trace(r.raw("trace"))
    formats = _parse_formats(r.raw("formats"))
    if trace.guard and (trace.api != "torch.jit.trace" or "torchscript" not in formats):
        raise WorkerError(
            None, "bad_request", "`spec.trace.guard` wraps model.pt traced by torch.jit.trace; this job has "
            f"api {trace.api} and formats {formats}", field="spec.trace.guard",
        )
    return Job(
        name=r.text("name"),
        model=parse_model(r.raw("model")),
        inputs=_parse_inputs(r.raw("inputs")),
        trace=trace,
        target=_parse_target(r.raw("target")),
        formats=formats,
        aoti=_parse_aoti(r.raw("aoti")),
        staging_dir=staging,
        extra_record=r.mapping("extra_record"),
    )


def _parse_aoti(value: Any) -> AotiSpec | None:
    if value is None:
        return None
    r = Reader(value, "job.aoti", AOTI_KEYS)
    return AotiSpec(inductor_configs=dict(r.mapping("inductor_configs")))


def _parse_formats(value: Any) -> list[str]:
    if not (isinstance(value, list) and value and all(isinstance(v, str) and v in FORMATS for v in value)):
        raise WorkerError(
            None, "bad_request", f"`spec.output.formats` must be a non-empty list of {', '.join(FORMATS)}",
            field="spec.output.formats",
        )
    return list(value)
