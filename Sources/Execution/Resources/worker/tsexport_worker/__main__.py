"""`python -u -m tsexport_worker serve` (the protocol loop) and `... verify-bundle DIR` (one-shot verify)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, Any

from . import probe
from .errors import WorkerError, describe, traceback_tail
from .protocol import Channel, Request, parse_job, parse_request


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


def handle(request: Request, channel: Channel) -> dict[str, Any]:
    """Run one request; raises WorkerError on failure."""
    if request.op == "probe":
        return probe.hello_fields()
    if request.op == "export":
        job = parse_job(request.body.get("job"))
        require_in_stage("load", "torch", "transformers", "safetensors")
        from .export import export  # imports torch and safetensors: only now that they are known to exist

        def progress(stage: str, status: str, elapsed_ms: int | None) -> None:
            assert request.id is not None
            channel.progress(request.id, stage, status, elapsed_ms)

        return export(job, progress)
    if request.op == "verify_bundle":
        bundle = request.body.get("dir")
        if not isinstance(bundle, str):
            raise WorkerError(None, "bad_request", "verify_bundle needs `dir`, the bundle's absolute path")
        tolerance = request.body.get("tolerance") or {}
        if not isinstance(tolerance, dict):
            raise WorkerError(None, "bad_request", "`tolerance` must be an object with atol and rtol")
        require_in_stage("verify", "torch", "safetensors")
        from .verify import verify_bundle

        def verify_progress(stage: str, status: str, elapsed_ms: int | None) -> None:
            assert request.id is not None
            channel.progress(request.id, stage, status, elapsed_ms)

        return verify_bundle(bundle, tolerance.get("atol"), tolerance.get("rtol"), verify_progress)
    if request.op == "bench":
        require_in_stage("bench", "torch", "safetensors")  # transformers only for the eager side
        from .bench import bench, parse_bench_request

        def bench_progress(stage: str, status: str, elapsed_ms: int | None) -> None:
            assert request.id is not None
            channel.progress(request.id, stage, status, elapsed_ms)

        return bench(parse_bench_request(request.body), bench_progress)
    if request.op == "deploy":
        from .deploy import deploy, parse_deploy  # needs neither torch nor transformers

        def deploy_progress(stage: str, status: str, elapsed_ms: int | None) -> None:
            assert request.id is not None
            channel.progress(request.id, stage, status, elapsed_ms)

        return deploy(parse_deploy(request.body), deploy_progress)
    if request.op == "shutdown":
        return {}
    raise WorkerError(
        None, "bad_request", f"unknown op {request.op!r}; expected probe, export, verify_bundle, deploy, bench or shutdown"
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


def verify_once(bundle: str, atol: float | None, rtol: float | None) -> int:
    """One `result` (or `error`) line with id 0; exit 0 when every case passed, 1 otherwise."""
    channel = Channel(protocol_stream())
    try:
        require_in_stage("verify", "torch", "safetensors")
        from .verify import verify_bundle

        data = verify_bundle(os.path.abspath(bundle), atol, rtol)
    except WorkerError as error:
        channel.error(0, error)
        return 1
    except Exception as exc:  # noqa: BLE001
        channel.error(0, WorkerError("verify", "internal", describe(exc), detail=traceback_tail(exc)))
        return 1
    channel.result(0, data)
    return 0 if data["passed"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsexport_worker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="speak the JSON-lines protocol on stdin/stdout")
    verify = commands.add_parser("verify-bundle", help="re-check a bundle's model.pt against its reference outputs")
    verify.add_argument("dir")
    verify.add_argument("--atol", type=float, default=None)
    verify.add_argument("--rtol", type=float, default=None)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve()
    return verify_once(args.dir, args.atol, args.rtol)


if __name__ == "__main__":
    sys.exit(main())
