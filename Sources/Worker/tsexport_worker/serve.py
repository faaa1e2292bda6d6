"""The protocol loop: one request per stdin line, one result or error per request on the protocol stream."""

from __future__ import annotations

import os
import sys
from typing import IO, Any

from .errors import WorkerError, describe, traceback_tail
from .protocol import BENCH_KEYS, Channel, ProgressFn, Request, parse_job, parse_request, parse_tolerance, request_body
from .runtime import probe


def protocol_stream() -> IO[str]:
    """A private handle on the real stdout; fd 1 and sys.stdout then point at stderr.

    Whatever model code prints (Python `print`, C libraries writing to fd 1) lands on stderr, so stdout carries
    protocol lines only.
    """
    sys.stdout.flush()
    stream = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return stream


def require_in_stage(stage: str, *names: str) -> None:
    """`missing_dependency` reported against the stage that needs the packages."""
    try:
        probe.require(*names)
    except WorkerError as error:
        error.stage = stage
        raise


def _progress(request: Request, channel: Channel) -> ProgressFn:
    def progress(stage: str, status: str, elapsed_ms: int | None) -> None:
        assert request.id is not None
        channel.progress(request.id, stage, status, elapsed_ms)

    return progress


def handle(request: Request, channel: Channel) -> dict[str, Any]:
    """Run one request; raises WorkerError on failure. Every key of a request is required, none other allowed."""
    if request.op in ("probe", "shutdown"):
        request_body(request, ())
        return probe.hello_fields() if request.op == "probe" else {}
    if request.op == "export":
        job = parse_job(request_body(request, ("job",))["job"])
        require_in_stage("load", "torch", "transformers", "safetensors")
        from .export.export import export  # imports torch and safetensors: only now that they are known to exist

        return export(job, _progress(request, channel))
    if request.op == "verify_bundle":
        body = request_body(request, ("dir", "tolerance", "encode_check"))
        bundle = body["dir"]
        if not isinstance(bundle, str) or not os.path.isabs(bundle):
            raise WorkerError(None, "bad_request", "verify_bundle needs `dir`, the bundle's absolute path", field="dir")
        tolerance = parse_tolerance(body["tolerance"], "tolerance")
        encode = body["encode_check"]
        min_cosine: float | None = None
        if encode is not None:
            gate = encode.get("min_cosine") if isinstance(encode, dict) and set(encode) == {"min_cosine"} else None
            if isinstance(gate, bool) or not isinstance(gate, (int, float)):
                raise WorkerError(None, "bad_request", "verify_bundle's `encode_check` is null or "
                                  "{\"min_cosine\": number}", field="encode_check")
            min_cosine = float(gate)
        require_in_stage("verify", "torch", "safetensors")
        from .verify.verify import verify_bundle

        return verify_bundle(bundle, tolerance.atol, tolerance.rtol, _progress(request, channel),
                             encode_min_cosine=min_cosine)
    if request.op == "bench":
        request_body(request, BENCH_KEYS)  # before torch is required: a bad request is answered as one
        require_in_stage("bench", "torch", "safetensors")  # transformers only for the eager side
        from .bench.bench import bench, parse_bench_request

        return bench(parse_bench_request(request.body), _progress(request, channel))
    if request.op == "guard":
        body = request_body(request, ("dir", "ranges"))
        bundle, ranges = body["dir"], body["ranges"]
        if not isinstance(bundle, str) or not os.path.isabs(bundle):
            raise WorkerError(None, "bad_request", "guard needs `dir`, the bundle's absolute path", field="dir")
        if not isinstance(ranges, dict) or not all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v) for v in ranges.values()
        ):
            raise WorkerError(
                None, "bad_request", f"guard needs `ranges`, axis → [min, max], not {ranges!r}", field="ranges"
            )
        require_in_stage("guard", "torch")
        from .export.envelope import reseal

        return reseal(bundle, ranges)
    if request.op == "inspect":
        from .runtime.inspect_model import KEYS, inspect_folder, parse_inspect

        source, class_name, task = parse_inspect(request_body(request, KEYS))
        require_in_stage("load", "torch", "transformers")
        return inspect_folder(source, class_name, task)
    if request.op == "config_keys":
        body = request_body(request, ("class",))
        if not isinstance(body["class"], str):
            raise WorkerError(None, "bad_request", "config_keys needs `class`, a model class name", field="class")
        require_in_stage("load", "torch", "transformers")
        from .runtime.load import config_class_keys

        return config_class_keys(body["class"])
    if request.op == "deploy":
        from .deploy import deploy, parse_deploy  # needs neither torch nor transformers

        return deploy(parse_deploy(request.body), _progress(request, channel))
    raise WorkerError(
        None, "bad_request",
        f"unknown op {request.op!r}; expected probe, export, verify_bundle, guard, inspect, config_keys, deploy, bench"
        " or shutdown",
    )


def release_memory() -> None:
    """Give the model's memory back to the system once a request is done: collect the reference cycles modules
    hold, then ask glibc to return freed heap pages (it keeps them otherwise, since weight-sized blocks come from
    the heap once its mmap threshold has grown)."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim


def answer(line: str, channel: Channel) -> bool:
    """Answer one request line with exactly one result or error; False once the worker should stop."""
    request_id: int | None = None
    try:
        request = parse_request(line)
        request_id = request.id
        data = handle(request, channel)
        if request.op in ("export", "bench"):
            release_memory()  # before answering, so the next process (the verifier) does not meet our model's pages
        channel.result(request_id, data)
        return request.op != "shutdown"
    except WorkerError as error:
        channel.error(request_id, error)
    except Exception as exc:  # noqa: BLE001 - never let a request kill the worker
        channel.error(request_id, WorkerError(None, "internal", describe(exc), detail=traceback_tail(exc)))
    return True


def serve() -> int:
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(encoding="utf-8")  # requests are UTF-8 whatever the locale says
    channel = Channel(protocol_stream())
    channel.hello(probe.hello_fields())
    while True:
        line = sys.stdin.readline()
        if not line or (line.strip() and not answer(line, channel)):
            # Leave at once: finalising torch and transformers at interpreter exit takes seconds of CPU and keeps the
            # model's memory mapped, and there is nothing left to clean up (every file is written and closed).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
