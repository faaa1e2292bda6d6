"""The JSON-lines protocol: messages out, requests in, and the export job as typed values.

Field paths in errors are manifest paths (`spec.model.config.hidden_act`), because that is what the user edits; the
job mirrors the manifest's `spec` one to one, so `job.model.seed` is `spec.model.seed`.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from .errors import WorkerError

OPS = ("probe", "export", "verify_bundle", "deploy", "bench", "shutdown")
# The bundle's files, and the name of the record embedded in model.pt through `_extra_files`
RECORD_NAME = "tsexport/record.json"
MODEL_FILE = "model.pt"
SAMPLE_FILE = "sample_inputs.safetensors"
REFERENCE_FILE = "reference_outputs.safetensors"
STAGES = ("load", "inputs", "trace", "serialize", "reference", "verify", "deploy", "bench")
HARDWARE = ("cpu", "cuda", "inf1", "inf2")
OPTIMIZE = ("none", "freeze", "optimize_for_inference")
MODEL_DTYPES = ("float32", "float16", "bfloat16")
TENSOR_DTYPES = ("int64", "int32", "float32", "float16", "bfloat16", "bool")
SOURCES = ("text", "values", "random", "zeros", "ones")


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: non-finite floats travel as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def encode(message: dict[str, Any]) -> str:
    """One protocol line (no embedded newline: json.dumps escapes them)."""
    return json.dumps(_finite(message), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


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


ProgressFn = Callable[[str, str, "int | None"], None]


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


# ---------------------------------------------------------------------------------------------------------------
# The export job


class _Reader:
    """Typed access to one JSON object of the job, reporting the manifest path of a bad value."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise WorkerError(None, "bad_request", f"`{path}` must be an object", field=path)
        self.data = data
        self.path = path

    def field(self, key: str) -> str:
        return f"{self.path}.{key}"

    def get(self, key: str, kinds: tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise WorkerError(None, "bad_request", f"`{self.field(key)}` is required", field=self.field(key))
            return default
        value = self.data[key]
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds)
        if not ok:
            names = " or ".join(kind.__name__ for kind in kinds)
            raise WorkerError(
                None, "bad_request", f"`{self.field(key)}` must be {names}, not {value!r}", field=self.field(key)
            )
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, (str,), default)
        if value not in choices:
            raise WorkerError(
                None,
                "bad_request",
                f"`{self.field(key)}` is {value!r}; expected one of {', '.join(choices)}",
                field=self.field(key),
            )
        return str(value)


@dataclass(frozen=True)
class ModelSpec:
    class_name: str
    pretrained: str | None = None
    pretrained_is_local: bool = False
    revision: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    torchscript: bool = True
    seed: int = 0
    dtype: str = "float32"
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False


@dataclass(frozen=True)
class TensorSpec:
    index: int
    name: str
    source: str
    dtype: str = "int64"
    shape: list[int] | None = None
    values: Any = None
    low: float | None = None
    high: float | None = None

    @property
    def path(self) -> str:
        return f"spec.inputs.tensors[{self.index}]"


@dataclass(frozen=True)
class InputsSpec:
    tensors: list[TensorSpec]
    tokenizer: str | None = None
    text: str | None = None
    add_special_tokens: bool = False
    mask: list[int] = field(default_factory=list)
    pad_to: int | None = None


@dataclass(frozen=True)
class TraceSpec:
    strict: bool = True
    check_shapes: list[list[int]] = field(default_factory=list)
    split: dict[str, Any] | None = None


@dataclass(frozen=True)
class TargetSpec:
    hardware: str = "cpu"
    optimize: str = "none"


@dataclass(frozen=True)
class Job:
    name: str
    model: ModelSpec
    inputs: InputsSpec
    trace: TraceSpec
    target: TargetSpec
    staging_dir: str
    extra_record: dict[str, Any] = field(default_factory=dict)


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _parse_model(data: Any) -> ModelSpec:
    r = _Reader(data, "spec.model")
    config = r.get("config", (dict,), {})
    return ModelSpec(
        class_name=r.get("class", (str,), required=True),
        pretrained=r.get("pretrained", (str,)),
        pretrained_is_local=r.get("pretrained_is_local", (bool,), False),
        revision=r.get("revision", (str,)),
        config=dict(config),
        torchscript=r.get("torchscript", (bool,), True),
        seed=r.get("seed", (int,), 0),
        dtype=r.choice("dtype", MODEL_DTYPES, "float32"),
        attn_implementation=r.get("attn_implementation", (str,)),
        trust_remote_code=r.get("trust_remote_code", (bool,), False),
        allow_pickle=r.get("allow_pickle", (bool,), False),
    )


def _parse_tensor(index: int, data: Any) -> TensorSpec:
    r = _Reader(data, f"spec.inputs.tensors[{index}]")
    source = r.get("from", (str,), required=True)
    if source not in SOURCES:
        raise WorkerError(
            None, "bad_request", f"`{r.field('from')}` is {source!r}; expected one of {', '.join(SOURCES)}",
            field=r.field("from"),
        )
    shape = r.get("shape", (list,))
    if shape is not None and not (_int_list(shape) and all(d >= 0 for d in shape)):
        raise WorkerError(None, "bad_request", f"`{r.field('shape')}` must be a list of sizes", field=r.field("shape"))
    if source in ("random", "zeros", "ones") and shape is None:
        raise WorkerError(
            None, "bad_request", f"`{r.field('shape')}` is required for from: {source}", field=r.field("shape")
        )
    values = r.get("values", (list, int, float, bool))
    if source == "values" and values is None:
        raise WorkerError(
            None, "bad_request", f"`{r.field('values')}` is required for from: values", field=r.field("values")
        )
    return TensorSpec(
        index=index,
        name=r.get("name", (str,), required=True),
        source=source,
        dtype=r.choice("dtype", TENSOR_DTYPES, "int64"),
        shape=shape,
        values=values,
        low=r.get("low", (int, float)),
        high=r.get("high", (int, float)),
    )


def _parse_inputs(data: Any) -> InputsSpec:
    r = _Reader(data, "spec.inputs")
    tensors = r.get("tensors", (list,), required=True)
    if not tensors:
        raise WorkerError(
            None, "bad_request", "`spec.inputs.tensors` needs at least one tensor", field=r.field("tensors")
        )
    mask = r.get("mask", (list,), [])
    if not _int_list(mask):
        raise WorkerError(None, "bad_request", "`spec.inputs.mask` must be a list of positions", field=r.field("mask"))
    return InputsSpec(
        tensors=[_parse_tensor(i, t) for i, t in enumerate(tensors)],
        tokenizer=r.get("tokenizer", (str,)),
        text=r.get("text", (str,)),
        add_special_tokens=r.get("add_special_tokens", (bool,), False),
        mask=list(mask),
        pad_to=r.get("pad_to", (int,)),
    )


def _parse_trace(data: Any) -> TraceSpec:
    r = _Reader(data if data is not None else {}, "spec.trace")
    shapes = r.get("check_shapes", (list,), [])
    for i, shape in enumerate(shapes):
        if not (_int_list(shape) and len(shape) == 2 and all(d > 0 for d in shape)):
            raise WorkerError(
                None, "bad_request", f"`spec.trace.check_shapes[{i}]` must be [batch, sequence]",
                field=f"spec.trace.check_shapes[{i}]",
            )
    return TraceSpec(strict=r.get("strict", (bool,), True), check_shapes=[list(s) for s in shapes], split=r.get("split", (dict,)))


def _parse_target(data: Any) -> TargetSpec:
    r = _Reader(data if data is not None else {}, "spec.target")
    return TargetSpec(hardware=r.choice("hardware", HARDWARE, "cpu"), optimize=r.choice("optimize", OPTIMIZE, "none"))


def parse_job(data: Any) -> Job:
    """The export job of a request; `bad_request` with the manifest path of the first bad value."""
    if not isinstance(data, dict):
        raise WorkerError(None, "bad_request", "an export request needs `job`, an object")
    staging = data.get("staging_dir")
    if not isinstance(staging, str) or not staging:
        raise WorkerError(None, "bad_request", "the job needs `staging_dir`, an absolute path")
    r = _Reader(data, "job")
    return Job(
        name=r.get("name", (str,), "model"),
        model=_parse_model(r.data.get("model")),
        inputs=_parse_inputs(r.data.get("inputs")),
        trace=_parse_trace(r.data.get("trace")),
        target=_parse_target(r.data.get("target")),
        staging_dir=staging,
        extra_record=dict(r.get("extra_record", (dict,), {})),
    )
