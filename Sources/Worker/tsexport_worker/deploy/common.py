"""What both deploy kinds share: the request, the bundle as its record describes it, and the sha256 check."""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from typing import Any

from ..bundle import AOTI_FILE, MODEL_FILE, REFERENCE_FILE, SAMPLE_FILE, read_record
from ..errors import WorkerError, describe, traceback_tail
from ..reader import check_keys

KINDS = ("triton", "torchserve")
STAGE = "deploy"
# A deploy that cannot be written (unreadable bundle, a model Triton cannot serve, torch-model-archiver failing).
# One of the protocol's existing codes; the files written are the deploy's serialized form.
FAILED = "serialize_failed"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
REQUEST_KEYS = (
    "kind", "bundle", "dest", "name", "max_batch_size", "variable_dims", "batch_dim", "version", "format",
)
FORMATS = ("torchscript", "aoti")


# ---------------------------------------------------------------------------------------------------------------
# The request


@dataclass(frozen=True)
class DeployRequest:
    kind: str
    bundle: str
    dest: str
    name: str
    max_batch_size: int
    variable_dims: bool
    version: str
    # Which artifact a triton deploy serves: torchscript (model.pt) or aoti (model.pt2).
    format: str
    # The size a triton config states for the batch dimension (None: the recorded one, -1 where the cases vary).
    batch_dim: int | None


def _bad(message: str, field: str) -> WorkerError:
    return WorkerError(None, "bad_request", message, field=field)


def parse_deploy(body: dict[str, Any]) -> DeployRequest:
    """The fields of a deploy request (every one required, no other); `bad_request` naming the first bad one."""
    fields = {key: value for key, value in body.items() if key not in ("id", "op")}
    check_keys(fields, None, REQUEST_KEYS)
    kind = fields.get("kind")
    if kind not in KINDS:
        raise _bad(
            f"deploy `kind` is {kind!r}; expected one of {', '.join(KINDS)} (a directory deploy is the bundle)", "kind"
        )
    paths = {}
    for key in ("bundle", "dest"):
        value = fields.get(key)
        if not isinstance(value, str) or not os.path.isabs(value):
            raise _bad(f"deploy needs `{key}`, an absolute path", key)
        paths[key] = os.path.normpath(value)
    name = fields.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise _bad(f"deploy `name` is {name!r}; expected a model name (letters, digits, '-', '_', '.')", "name")
    max_batch = fields.get("max_batch_size")
    if not (isinstance(max_batch, int) and not isinstance(max_batch, bool) and max_batch >= 0):
        raise _bad(f"deploy `max_batch_size` must be an integer >= 0, not {max_batch!r}", "max_batch_size")
    variable = fields.get("variable_dims")
    if not isinstance(variable, bool):
        raise _bad(f"deploy `variable_dims` must be true or false, not {variable!r}", "variable_dims")
    batch_dim = fields.get("batch_dim")
    whole = isinstance(batch_dim, int) and not isinstance(batch_dim, bool)
    if batch_dim is not None and not (whole and batch_dim >= 1):
        raise _bad(f"deploy `batch_dim` must be null or an integer >= 1, not {batch_dim!r}", "batch_dim")
    if batch_dim is not None and isinstance(max_batch, int) and max_batch > 0:
        raise _bad("deploy `batch_dim` states a batch dimension that max_batch_size > 0 leaves out", "batch_dim")
    version = fields.get("version")
    if not isinstance(version, str) or not NAME_PATTERN.fullmatch(version):
        raise _bad(f"deploy `version` must be a version string such as 1.0, not {version!r}", "version")
    artifact = fields.get("format")
    if artifact not in FORMATS or (artifact == "aoti" and kind != "triton"):
        raise _bad(f"deploy `format` is {artifact!r}; expected torchscript, or aoti for a triton deploy", "format")
    return DeployRequest(str(kind), paths["bundle"], paths["dest"], name, max_batch, variable, version, str(artifact),
                         batch_dim)


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


def failed(message: str, exc: BaseException | None = None) -> WorkerError:
    return WorkerError(STAGE, FAILED, message, detail=traceback_tail(exc) if exc is not None else None)


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
    """model.pt and the record (bundle.read_record: `record.json` laid over the record embedded in model.pt)."""
    model_path = os.path.join(directory, MODEL_FILE)
    if not os.path.isfile(model_path) and os.path.isfile(os.path.join(directory, AOTI_FILE)):
        model_path = os.path.join(directory, AOTI_FILE)  # formats: [aoti] alone: model.pt2 is the artifact
    if not os.path.isfile(model_path):
        raise failed(f"the bundle {directory} has no {MODEL_FILE}")
    record = read_record(directory, STAGE, FAILED)
    inputs = _signature(record.get("input_signature"))
    outputs = _signature(record.get("output_signature"))
    if inputs is None or outputs is None:
        raise failed(
            f"the bundle {directory} records no input and output signature (record.json or the record in "
            f"{MODEL_FILE}); re-export it"
        )
    recorded_target = record.get("target")
    target: dict[str, Any] = recorded_target if isinstance(recorded_target, dict) else {}
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
        raise failed(f"the bundle's sample or reference tensors cannot be read: {describe(exc)}", exc) from exc
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


def check_sha(bundle: Bundle, actual: str) -> None:
    recorded = bundle.record.get("model_sha256")
    if isinstance(recorded, str) and recorded != actual:
        raise failed(
            f"the bundle's {MODEL_FILE} (sha256 {actual[:12]}…) is not the one its record states "
            f"({recorded[:12]}…); re-export or verify the bundle"
        )
