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
import struct
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
# library sentence-transformers: real-text tokens and encode()'s embeddings at every point, for the verifier.
ENCODE_FILE = "encode_reference.safetensors"
ENCODER_FILE = "encoder.pt"
DECODER_STEP_FILE = "decoder_step.pt"
REPORT_FILE = "bench.html"
# Written by the Swift side beside the record: how, when and where the bundle was built, its content digest and
# its deploys' files; neither it nor the report is part of the bundle's content.
BUILD_FILE = "build.json"
CHUNK = 1 << 20


def readable_as_others(path: str) -> None:
    """Gives a file the mode a plain `open()` would under the process's umask (safetensors writes 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


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


def canonical_safetensors(path: str) -> None:
    """Rewrite a safetensors file's header with its keys (and the metadata's) in sorted order, so the same tensors
    give the same bytes (safetensors writes its metadata map in hash order). The tensor data is not touched."""
    with open(path, "r+b") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length).decode("utf-8"))
        data = handle.read()
        metadata = header.pop("__metadata__", None)
        ordered: dict[str, Any] = {}
        if metadata is not None:
            ordered["__metadata__"] = dict(sorted(metadata.items()))
        ordered.update(sorted(header.items()))
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        text += b" " * (-len(text) % 8)
        handle.seek(0)
        handle.write(struct.pack("<Q", len(text)) + text + data)
        handle.truncate()


def cpu_features() -> dict[str, Any]:
    """What decides the bits of CPU reference outputs: the machine, torch's kernel capability (DEFAULT, AVX2,
    AVX512, ...) and the vector extensions /proc/cpuinfo lists that torch's kernels use."""
    wanted = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
              "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile", "asimd", "sve", "bf16", "i8mm")
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    capability = None
    try:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - reported as unknown
        capability = None
    import platform

    return {"machine": platform.machine(), "torch_capability": capability,
            "features": sorted(f for f in wanted if f in flags)}
