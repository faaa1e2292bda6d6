"""The deploy op: place a verified bundle where a serving system expects it.

- `triton`: a Triton model repository entry, `dest/config.pbtxt` and `dest/1/model.pt`, for the `pytorch_libtorch`
  backend, typed and shaped from the bundle's record.
- `torchserve`: `dest/<name>.mar`, made by the real `torch-model-archiver` (run as an argv array in this interpreter)
  with `torchserve_handler.py`, which feeds the bundle's input signature to the TorchScript module.

The Swift side decides (kind, name, max_batch_size, variable dims), stages `dest` and moves it into place; this module
writes into `dest` only. Needs neither torch nor transformers: the record is read from the bundle's `record.json` and
from `model.pt`'s zip entry, shapes from the safetensors headers.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import WORKER_VERSION
from .errors import WorkerError, describe, traceback_tail
from .protocol import MODEL_FILE, RECORD_NAME, REFERENCE_FILE, SAMPLE_FILE, ProgressFn, no_progress

KINDS = ("triton", "torchserve")
STAGE = "deploy"
# A deploy that cannot be written (unreadable bundle, a model Triton cannot serve, torch-model-archiver failing).
# One of the protocol's existing codes; the files written are the deploy's serialized form.
FAILED = "serialize_failed"
RECORD_FILE = "record.json"
SIGNATURE_FILE = "tsexport_signature.json"
HANDLER_FILE = "torchserve_handler.py"
ARCHIVER_MODULE = "model_archiver.model_packaging"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")

# record dtype (torch dtype without "torch.") -> Triton ModelConfig DataType
TRITON_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
}


# ---------------------------------------------------------------------------------------------------------------
# The request


@dataclass(frozen=True)
class DeployRequest:
    kind: str
    bundle: str
    dest: str
    name: str
    max_batch_size: int = 0
    variable_dims: bool = False
    version: str = "1.0"


def _bad(message: str) -> WorkerError:
    return WorkerError(None, "bad_request", message)


def parse_deploy(body: dict[str, Any]) -> DeployRequest:
    """The fields of a deploy request; `bad_request` naming the first bad one."""
    kind = body.get("kind")
    if kind not in KINDS:
        raise _bad(f"deploy `kind` is {kind!r}; expected one of {', '.join(KINDS)} (a directory deploy is the bundle)")
    paths = {}
    for key in ("bundle", "dest"):
        value = body.get(key)
        if not isinstance(value, str) or not os.path.isabs(value):
            raise _bad(f"deploy needs `{key}`, an absolute path")
        paths[key] = os.path.normpath(value)
    name = body.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise _bad(f"deploy `name` is {name!r}; expected a model name (letters, digits, '-', '_', '.')")
    max_batch = body.get("max_batch_size", 0)
    if max_batch is None:
        max_batch = 0
    if not (isinstance(max_batch, int) and not isinstance(max_batch, bool) and max_batch >= 0):
        raise _bad(f"deploy `max_batch_size` must be an integer >= 0, not {max_batch!r}")
    variable = body.get("variable_dims", False)
    if not isinstance(variable, bool):
        raise _bad(f"deploy `variable_dims` must be true or false, not {variable!r}")
    version = body.get("version") or "1.0"
    if not isinstance(version, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", version):
        raise _bad(f"deploy `version` must be a version string such as 1.0, not {version!r}")
    return DeployRequest(kind, paths["bundle"], paths["dest"], name, max_batch, variable, version)


# ---------------------------------------------------------------------------------------------------------------
# The bundle


@dataclass
class Bundle:
    dir: str
    model_path: str
    record: dict[str, Any]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    hardware: str
    device: str


def _failed(message: str, exc: BaseException | None = None) -> WorkerError:
    return WorkerError(STAGE, FAILED, message, detail=traceback_tail(exc) if exc is not None else None)


def embedded_record(model_path: str) -> dict[str, Any]:
    """The record embedded in model.pt (`_extra_files`), read from its zip entry without torch."""
    try:
        with zipfile.ZipFile(model_path) as archive:
            for entry in archive.namelist():
                if entry.endswith("/extra/" + RECORD_NAME):
                    value = json.loads(archive.read(entry).decode("utf-8"))
                    return value if isinstance(value, dict) else {}
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise _failed(f"{model_path} is not a TorchScript archive: {describe(exc)}", exc) from exc
    return {}


def _signature(value: Any) -> list[dict[str, Any]] | None:
    if not isinstance(value, list) or not value:
        return None
    for entry in value:
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("dtype"), str)
            and isinstance(shape, list)
            and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        ):
            return None
    return [{"name": e["name"], "dtype": e["dtype"], "shape": list(e["shape"])} for e in value]


def read_bundle(directory: str) -> Bundle:
    """model.pt and the record: `record.json` (the bundle's) laid over the record embedded in model.pt."""
    model_path = os.path.join(directory, MODEL_FILE)
    if not os.path.isfile(model_path):
        raise _failed(f"the bundle {directory} has no {MODEL_FILE}")
    record = embedded_record(model_path)
    record_path = os.path.join(directory, RECORD_FILE)
    if os.path.isfile(record_path):
        try:
            with open(record_path, encoding="utf-8") as handle:
                on_disk = json.load(handle)
        except (OSError, ValueError) as exc:
            raise _failed(f"{record_path} cannot be read: {describe(exc)}", exc) from exc
        if isinstance(on_disk, dict):
            record = {**record, **on_disk}
    inputs = _signature(record.get("input_signature"))
    outputs = _signature(record.get("output_signature"))
    if inputs is None or outputs is None:
        raise _failed(
            f"the bundle {directory} records no input and output signature (record.json or the record in "
            f"{MODEL_FILE}); re-export it"
        )
    target = record.get("target") if isinstance(record.get("target"), dict) else {}
    hardware = str(target.get("hardware") or record.get("hardware") or "cpu")
    device = str(target.get("device") or record.get("device") or "cpu")
    return Bundle(directory, model_path, record, inputs, outputs, hardware, device)


def safetensors_shapes(path: str) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Tensor shapes and metadata from a safetensors header (8-byte little-endian length, then JSON)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length).decode("utf-8"))
    metadata = header.pop("__metadata__", None) or {}
    return {name: list(info["shape"]) for name, info in header.items()}, metadata


def case_shapes(bundle: Bundle) -> list[tuple[list[list[int]], list[list[int]]]]:
    """(input shapes, output shapes) of every recorded case that has reference outputs, the traced case first."""
    samples_path = os.path.join(bundle.dir, SAMPLE_FILE)
    references_path = os.path.join(bundle.dir, REFERENCE_FILE)
    traced = ([s["shape"] for s in bundle.inputs], [s["shape"] for s in bundle.outputs])
    if not (os.path.isfile(samples_path) and os.path.isfile(references_path)):
        return [traced]
    try:
        samples, metadata = safetensors_shapes(samples_path)
        references, _ = safetensors_shapes(references_path)
        cases = json.loads(metadata.get("tsexport.cases", "[]"))
    except (OSError, ValueError, KeyError, struct.error) as exc:
        raise _failed(f"the bundle's sample or reference tensors cannot be read: {describe(exc)}", exc) from exc
    found = [traced]
    for case in cases:
        name = case.get("case") if isinstance(case, dict) else None
        if not isinstance(name, str) or name == "traced" or case.get("error"):
            continue
        ins = [samples.get(f"{name}/{s['name']}") for s in bundle.inputs]
        outs = [references.get(f"{name}/output_{i}") for i in range(len(bundle.outputs))]
        if all(shape is not None for shape in ins + outs):
            found.append(([list(s) for s in ins if s is not None], [list(s) for s in outs if s is not None]))
    return found


def _copy_hashed(source: str, target: str) -> str:
    """Copy a file, returning the sha256 of what was read."""
    digest = hashlib.sha256()
    with open(source, "rb") as reader, open(target, "wb") as writer:
        for chunk in iter(lambda: reader.read(1 << 20), b""):
            digest.update(chunk)
            writer.write(chunk)
    shutil.copystat(source, target)
    return digest.hexdigest()


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha(bundle: Bundle, actual: str) -> None:
    recorded = bundle.record.get("model_sha256")
    if isinstance(recorded, str) and recorded != actual:
        raise _failed(
            f"the bundle's {MODEL_FILE} (sha256 {actual[:12]}…) is not the one its record states "
            f"({recorded[:12]}…); re-export or verify the bundle"
        )


# ---------------------------------------------------------------------------------------------------------------
# Triton


def triton_name(record_name: str, index: int) -> str:
    """`<name>__<index>`: Triton's pytorch_libtorch naming convention, with the record's name kept readable.

    TorchScript keeps no tensor names (a traced forward(*args) takes argument_1, argument_2, ...), so the backend
    binds config inputs and outputs by the `__<index>` suffix. The name part is the record's, with characters other
    than letters, digits and '_' and any run of underscores turned into one '_', so it never holds a second "__".
    """
    base = re.sub(r"_{2,}", "_", re.sub(r"[^A-Za-z0-9_]", "_", record_name)).strip("_")
    return f"{base or 'tensor'}__{index}"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def triton_dims(
    bundle: Bundle, request: DeployRequest, warnings: list[dict[str, Any]]
) -> tuple[list[list[int]], list[list[int]]]:
    """The config dims of every input and output: the recorded shapes, -1 where the cases vary (variable_dims), the
    batch dimension left out when max_batch_size > 0."""
    traced = ([s["shape"] for s in bundle.inputs], [s["shape"] for s in bundle.outputs])
    cases = case_shapes(bundle) if request.variable_dims else [traced]
    traced_in, traced_out = cases[0]

    def merged(position: int, side: int) -> list[int]:
        shapes = [case[side][position] for case in cases]
        first = shapes[0]
        if any(len(shape) != len(first) for shape in shapes):
            return list(first)  # ranks disagree: keep the traced shape, it is the one known to work
        return [d if all(shape[k] == d for shape in shapes) else -1 for k, d in enumerate(first)]

    dims_in = [merged(i, 0) for i in range(len(traced_in))]
    dims_out = [merged(i, 1) for i in range(len(traced_out))]
    if request.max_batch_size > 0:
        batch = traced_in[0][0] if traced_in[0] else None
        for signature, shapes in ((bundle.inputs, traced_in), (bundle.outputs, traced_out)):
            for spec, shape in zip(signature, shapes, strict=True):
                if not shape or shape[0] != batch:
                    raise WorkerError(
                        STAGE, "bad_request",
                        f"max_batch_size {request.max_batch_size} needs every input and output to lead with the "
                        f"batch dimension ({batch}); {spec['name']} has shape {shape}",
                    )
        dims_in = [d[1:] for d in dims_in]
        dims_out = [d[1:] for d in dims_out]
    if request.variable_dims and len(cases) == 1:
        warnings.append({
            "code": "fixed_dims",
            "message": "variable_dims was asked for but the bundle records no other case with reference outputs; "
            "the dims are the traced shapes",
        })
    return dims_in, dims_out


def _tensor_entry(name: str, record_name: str, data_type: str, dims: list[int]) -> list[str]:
    lines = ["  {", f"    # record: {json.dumps(record_name)}", f"    name: {_quote(name)}"]
    lines.append(f"    data_type: {data_type}")
    if dims:
        lines.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
    else:  # a 0-d tensor: Triton needs at least one dim; [1] reshaped to a scalar
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    lines.append("  }")
    return lines


def deploy_triton(bundle: Bundle, request: DeployRequest) -> dict[str, Any]:
    if bundle.hardware in ("inf1", "inf2"):
        raise _failed(
            f"the bundle was traced for {bundle.hardware} (Neuron); Triton's pytorch_libtorch backend cannot load "
            "Neuron-compiled TorchScript (serve it with Triton's python backend on a Neuron instance instead)"
        )
    nested = [s["name"] for s in bundle.outputs if "." in s["name"]]
    if nested:
        raise _failed(
            f"the module returns nested tuples ({', '.join(nested[:3])}); Triton's pytorch_libtorch backend serves "
            "only a tensor or a flat tuple of tensors"
        )
    warnings: list[dict[str, Any]] = []
    dims_in, dims_out = triton_dims(bundle, request, warnings)
    entries: dict[str, list[dict[str, Any]]] = {"input": [], "output": []}
    for side, signature, dims in (("input", bundle.inputs, dims_in), ("output", bundle.outputs, dims_out)):
        for index, (spec, shape) in enumerate(zip(signature, dims, strict=True)):
            data_type = TRITON_TYPES.get(spec["dtype"])
            if data_type is None:
                raise _failed(f"{side} {spec['name']} has dtype {spec['dtype']}, which Triton has no type for")
            if data_type == "TYPE_BF16":
                warnings.append({
                    "code": "bf16_io",
                    "message": f"{side} {spec['name']} is bfloat16 (TYPE_BF16); older pytorch_libtorch backends "
                    "accept only BOOL, UINT8, INT8, INT16, INT32, INT64, FP16, FP32 and FP64",
                })
            entries[side].append({
                "name": triton_name(spec["name"], index), "record_name": spec["name"], "data_type": data_type,
                "dims": shape,
            })
    instance_kind = "KIND_GPU" if bundle.device.startswith("cuda") else "KIND_CPU"
    sha = bundle.record.get("model_sha256")
    lines = [
        f"# Written by tsexport (worker {WORKER_VERSION}) from the bundle {bundle.dir}.",
        "# TorchScript keeps no tensor names: inputs and outputs are bound by the pytorch_libtorch backend's",
        "# <name>__<index> convention, in the record's order; each entry's comment names the record's tensor.",
        f"name: {_quote(request.name)}",
        'platform: "pytorch_libtorch"',
        f"max_batch_size: {request.max_batch_size}",
    ]
    for side in ("input", "output"):
        lines.append(f"{side} [")
        blocks = [_tensor_entry(e["name"], e["record_name"], e["data_type"], e["dims"]) for e in entries[side]]
        for i, block in enumerate(blocks):
            if i < len(blocks) - 1:
                block[-1] += ","
            lines += block
        lines.append("]")
    lines += ["instance_group [", "  {", f"    kind: {instance_kind}", "    count: 1", "  }", "]"]
    version_dir = os.path.join(request.dest, "1")
    try:
        os.makedirs(version_dir, exist_ok=True)
        copied = _copy_hashed(bundle.model_path, os.path.join(version_dir, MODEL_FILE))
        _check_sha(bundle, copied)
        with open(os.path.join(request.dest, "config.pbtxt"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    except OSError as exc:
        raise _failed(f"the Triton model entry cannot be written in {request.dest}: {describe(exc)}", exc) from exc
    return {
        "kind": "triton",
        "files": ["config.pbtxt", f"1/{MODEL_FILE}"],
        "model_sha256": sha if isinstance(sha, str) else copied,
        "platform": "pytorch_libtorch",
        "max_batch_size": request.max_batch_size,
        "inputs": entries["input"],
        "outputs": entries["output"],
        "instance_kind": instance_kind,
        "warnings": warnings,
    }


# ---------------------------------------------------------------------------------------------------------------
# TorchServe


def handler_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), HANDLER_FILE)


def archiver_version() -> str | None:
    try:
        import importlib.metadata

        return importlib.metadata.version("torch-model-archiver")
    except Exception:  # noqa: BLE001
        return None


def deploy_torchserve(bundle: Bundle, request: DeployRequest) -> dict[str, Any]:
    try:
        found = importlib.util.find_spec("model_archiver") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise WorkerError(
            STAGE, "missing_dependency",
            "deploy kind torchserve needs torch-model-archiver in the Python runtime (pip install "
            "torch-model-archiver), or let tsexport use its managed runtime, which has it",
        )
    sha = _sha256(bundle.model_path)
    _check_sha(bundle, sha)
    signature = {
        "name": request.name,
        "input_signature": bundle.inputs,
        "output_signature": bundle.outputs,
        "hardware": bundle.hardware,
        "device": bundle.device,
        "model_sha256": sha,
        "worker_version": WORKER_VERSION,
    }
    mar = os.path.join(request.dest, f"{request.name}.mar")
    try:
        os.makedirs(request.dest, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".tsexport-mar-", dir=request.dest) as scratch:
            # Extra files are passed comma-separated: copies under names without commas, whatever the bundle's path.
            extra = [os.path.join(scratch, SIGNATURE_FILE)]
            with open(extra[0], "w", encoding="utf-8") as handle:
                json.dump(signature, handle, indent=2, sort_keys=True)
            record_path = os.path.join(bundle.dir, RECORD_FILE)
            if os.path.isfile(record_path):
                extra.append(os.path.join(scratch, RECORD_FILE))
                shutil.copyfile(record_path, extra[-1])
            argv = [
                sys.executable, "-m", ARCHIVER_MODULE,
                "--model-name", request.name,
                "--version", request.version,
                "--serialized-file", bundle.model_path,
                "--handler", handler_path(),
                "--extra-files", ",".join(extra),
                "--export-path", request.dest,
                "--archive-format", "default",
                "--force",
            ]
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=scratch, check=False
            )
    except OSError as exc:
        raise _failed(f"the TorchServe archive cannot be written in {request.dest}: {describe(exc)}", exc) from exc
    if done.returncode != 0 or not os.path.isfile(mar):
        tail = "\n".join((done.stderr or done.stdout or "").strip().splitlines()[-12:])
        last = tail.splitlines()[-1] if tail else f"exit status {done.returncode}"
        raise WorkerError(
            STAGE, FAILED, f"torch-model-archiver failed: {last}", detail=f"argv: {argv}\n{tail}"
        )
    try:
        with zipfile.ZipFile(mar) as archive:
            manifest = json.loads(archive.read("MAR-INF/MANIFEST.json").decode("utf-8"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise _failed(f"torch-model-archiver wrote an unreadable archive: {describe(exc)}", exc) from exc
    return {
        "kind": "torchserve",
        "files": [os.path.basename(mar)],
        "mar": os.path.basename(mar),
        "model_sha256": sha,
        "manifest": manifest,
        "handler": HANDLER_FILE,
        "archiver_version": archiver_version(),
        "warnings": [],
    }


# ---------------------------------------------------------------------------------------------------------------
# The op


@contextlib.contextmanager
def _stage(progress: ProgressFn, timings: dict[str, int]) -> Iterator[None]:
    progress(STAGE, "start", None)
    started = time.perf_counter()
    try:
        yield
    except WorkerError as error:
        error.stage = error.stage or STAGE
        raise
    except Exception as exc:  # noqa: BLE001 - answered as `internal`, the worker goes on
        raise WorkerError(STAGE, "internal", describe(exc), detail=traceback_tail(exc)) from exc
    timings[STAGE] = round((time.perf_counter() - started) * 1000)
    progress(STAGE, "done", timings[STAGE])


def deploy(request: DeployRequest, progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Write the deploy of `request.bundle` into `request.dest`; returns the protocol's `result.data`."""
    timings: dict[str, int] = {}
    with _stage(progress, timings):
        bundle = read_bundle(request.bundle)
        data = deploy_triton(bundle, request) if request.kind == "triton" else deploy_torchserve(bundle, request)
    data["name"] = request.name
    data["dest"] = request.dest
    data["timings_ms"] = timings
    return data
