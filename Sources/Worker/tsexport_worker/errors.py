"""The one exception type the worker reports to the Swift side."""

from __future__ import annotations

import traceback
from typing import Any

ERROR_CODES = frozenset(
    {
        "missing_dependency",
        "export_failed",
        "unknown_class",
        "bad_config",
        "load_failed",
        "pickle_refused",
        "remote_code_refused",
        "tokenizer_failed",
        "unknown_input",
        "shape_mismatch",
        "forward_failed",
        "trace_failed",
        "strict_violation",
        "target_unavailable",
        "serialize_failed",
        "verify_failed",
        "bad_request",
        "internal",
    }
)


class WorkerError(Exception):
    """A failed request: which stage, a stable code, a sentence for the user and the manifest field at fault."""

    def __init__(
        self,
        stage: str | None,
        code: str,
        message: str,
        field: str | None = None,
        detail: str | None = None,
    ) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.stage = stage
        self.code = code
        self.message = message
        self.field = field
        self.detail = detail

    def to_message(self, request_id: int | None) -> dict[str, Any]:
        return {
            "type": "error",
            "id": request_id,
            "ok": False,
            "stage": self.stage,
            "code": self.code,
            "message": self.message,
            "field": self.field,
            "detail": self.detail,
        }


def traceback_tail(exc: BaseException, lines: int = 12) -> str:
    """The exception type and message plus the last lines of its traceback, for `--verbose`."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
    return "\n".join(text.splitlines()[-lines:])


def describe(exc: BaseException, limit: int = 400) -> str:
    """`Type: first line of the message`, shortened for a user-facing sentence."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if len(lines) > 1 and lines[-1] != first and ":" in lines[-1]:
        # TorchScript interpreter errors say what failed on their last line ("RuntimeError: index 1 is out ...").
        first = f"{first} … {lines[-1]}"
    if len(first) > limit:
        first = first[: limit - 1] + "…"
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
