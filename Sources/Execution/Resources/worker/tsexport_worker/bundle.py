"""The bundle on disk: its file names, its record, and the sha256 of its files.

One reader for the record: the bundle's `record.json` (written by the Swift side after verification) laid over the
record embedded in `model.pt` (`_extra_files`), read from the TorchScript zip without torch. Needs neither torch nor
transformers, so deploy can use it in a runtime that has neither.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from typing import IO, Any

from .errors import WorkerError, describe, traceback_tail

# The name of the record embedded in model.pt through `_extra_files`, and the bundle's files
RECORD_NAME = "tsexport/record.json"
MODEL_FILE = "model.pt"
AOTI_FILE = "model.pt2"
RECORD_FILE = "record.json"
SAMPLE_FILE = "sample_inputs.safetensors"
REFERENCE_FILE = "reference_outputs.safetensors"
ENCODER_FILE = "encoder.pt"
DECODER_STEP_FILE = "decoder_step.pt"
REPORT_FILE = "bench.html"
CHUNK = 1 << 20


def _unreadable(stage: str, code: str, message: str, exc: BaseException | None = None) -> WorkerError:
    return WorkerError(stage, code, message, detail=traceback_tail(exc) if exc is not None else None)


def embedded_record(model_path: str, stage: str, code: str) -> dict[str, Any]:
    """The record embedded in a TorchScript file (`_extra_files`), read from its zip entry without torch; {} when
    the file embeds none. An unreadable archive is a WorkerError with the caller's stage and code."""
    try:
        with zipfile.ZipFile(model_path) as archive:
            for entry in archive.namelist():
                if entry.endswith("/extra/" + RECORD_NAME):
                    value = json.loads(archive.read(entry).decode("utf-8"))
                    return value if isinstance(value, dict) else {}
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise _unreadable(stage, code, f"{model_path} is not a TorchScript archive: {describe(exc)}", exc) from exc
    return {}


def read_record(directory: str, stage: str, code: str) -> dict[str, Any]:
    """The bundle's record: `record.json` (when the bundle has one) laid over the record embedded in model.pt (a
    key of record.json wins). Failures are WorkerErrors with the caller's stage and code."""
    model_path = os.path.join(directory, MODEL_FILE)
    # a bundle whose artifact is model.pt2 alone (formats: [aoti]) has no model.pt: its record is record.json
    record = embedded_record(model_path, stage, code) if os.path.exists(model_path) else {}
    record_path = os.path.join(directory, RECORD_FILE)
    if os.path.isfile(record_path):
        try:
            with open(record_path, encoding="utf-8") as handle:
                on_disk = json.load(handle)
        except (OSError, ValueError) as exc:
            raise _unreadable(stage, code, f"{record_path} cannot be read: {describe(exc)}", exc) from exc
        if isinstance(on_disk, dict):
            record = {**record, **on_disk}
    return record


def recorded_device(record: dict[str, Any]) -> str:
    """The device the record says the bundle was traced on (`target.device`), `cpu` when it says none."""
    target = record.get("target")
    wanted = target.get("device", "cpu") if isinstance(target, dict) else "cpu"
    return str(wanted or "cpu")


def _hash_stream(reader: IO[bytes], writer: IO[bytes] | None = None) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: reader.read(CHUNK), b""):
        digest.update(chunk)
        if writer is not None:
            writer.write(chunk)
    return digest.hexdigest()


def sha256_file(path: str) -> str:
    """The hex sha256 of a file."""
    with open(path, "rb") as handle:
        return _hash_stream(handle)


def copy_hashed(source: str, target: str) -> str:
    """Copy a file (with its mode and times), returning the sha256 of what was read."""
    with open(source, "rb") as reader, open(target, "wb") as writer:
        digest = _hash_stream(reader, writer)
    shutil.copystat(source, target)
    return digest
