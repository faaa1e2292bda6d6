"""Deploy kind `triton`: a Triton model repository entry for the pytorch_libtorch backend."""

from __future__ import annotations

import json
import os
import re
from typing import Any

from .. import WORKER_VERSION
from ..bundle import AOTI_FILE, MODEL_FILE, copy_hashed
from ..errors import WorkerError, describe
from .common import STAGE, Bundle, DeployRequest, case_shapes, check_sha, failed

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
        raise failed(
            f"the bundle was traced for {bundle.hardware} (Neuron); Triton's pytorch_libtorch backend cannot load "
            "Neuron-compiled TorchScript (serve it with Triton's python backend on a Neuron instance instead)"
        )
    nested = [s["name"] for s in bundle.outputs if "." in s["name"]]
    if nested:
        raise failed(
            f"the module returns nested tuples ({', '.join(nested[:3])}); Triton's pytorch_libtorch backend serves "
            "only a tensor or a flat tuple of tensors"
        )
    warnings: list[dict[str, Any]] = []
    aoti = request.format == "aoti"
    if aoti and (request.max_batch_size != 0 or request.batch_dim != 1):
        # Triton's pytorch_backend README (AOT Inductor, beta since 26.03): batch sizes above 1 and sequence batching
        # are not available for PT2 archives yet; the Swift side plans max_batch_size 0 and batch_dim 1.
        raise WorkerError(
            STAGE, "bad_request",
            f"max_batch_size {request.max_batch_size}, batch_dim {request.batch_dim} with format aoti: Triton serves "
            "model.pt2 at batch 1 only, so a PT2 entry has max_batch_size 0 and batch_dim 1",
            field="max_batch_size" if request.max_batch_size != 0 else "batch_dim",
        )
    dims_in, dims_out = triton_dims(bundle, request, warnings)
    if request.batch_dim is not None:
        dims_in = [[request.batch_dim, *d[1:]] if d else d for d in dims_in]
        dims_out = [[request.batch_dim, *d[1:]] if d else d for d in dims_out]
    entries: dict[str, list[dict[str, Any]]] = {"input": [], "output": []}
    for side, signature, dims in (("input", bundle.inputs, dims_in), ("output", bundle.outputs, dims_out)):
        for index, (spec, shape) in enumerate(zip(signature, dims, strict=True)):
            data_type = TRITON_TYPES.get(spec["dtype"])
            if data_type is None:
                raise failed(f"{side} {spec['name']} has dtype {spec['dtype']}, which Triton has no type for")
            if data_type == "TYPE_BF16":
                warnings.append({
                    "code": "bf16_io",
                    "message": f"{side} {spec['name']} is bfloat16 (TYPE_BF16); older pytorch_libtorch backends "
                    "accept only BOOL, UINT8, INT8, INT16, INT32, INT64, FP16, FP32 and FP64",
                })
            entries[side].append({
                "name": f"{side.upper()}__{index}" if aoti else triton_name(spec["name"], index),
                "record_name": spec["name"], "data_type": data_type,
                "dims": shape,
            })
    instance_kind = "KIND_GPU" if bundle.device.startswith("cuda") else "KIND_CPU"
    sha = bundle.record.get("model_sha256")
    platform = "torch_aoti" if aoti else "pytorch_libtorch"
    artifact = AOTI_FILE if aoti else MODEL_FILE
    header = [
        "# model.pt2 (AOTInductor): inputs and outputs are bound by position, INPUT__<i> / OUTPUT__<i>, in the",
        "# record's order; Triton's PT2 support (beta) serves batch 1 only for now, so max_batch_size is 0.",
    ] if aoti else [
        "# TorchScript keeps no tensor names: inputs and outputs are bound by the pytorch_libtorch backend's",
        "# <name>__<index> convention, in the record's order; each entry's comment names the record's tensor.",
    ]
    lines = [
        f"# Written by tsexport (worker {WORKER_VERSION}) from the bundle of {request.name}.",
        *header,
        f"name: {_quote(request.name)}",
        *(['backend: "pytorch"'] if aoti else []),
        f"platform: {_quote(platform)}",
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
        if aoti:
            source = os.path.join(bundle.dir, AOTI_FILE)
            if not os.path.isfile(source):
                raise failed(f"format: aoti needs {AOTI_FILE} in the bundle; add aoti to spec.output.formats")
            copied = copy_hashed(source, os.path.join(version_dir, AOTI_FILE))
        elif not bundle.model_path.endswith(MODEL_FILE):
            raise failed(f"the bundle has no {MODEL_FILE} (its artifact is {AOTI_FILE}); deploy it with format: aoti")
        else:
            copied = copy_hashed(bundle.model_path, os.path.join(version_dir, MODEL_FILE))
            check_sha(bundle, copied)
        with open(os.path.join(request.dest, "config.pbtxt"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    except OSError as exc:
        raise failed(f"the Triton model entry cannot be written in {request.dest}: {describe(exc)}", exc) from exc
    return {
        "kind": "triton",
        "files": ["config.pbtxt", f"1/{artifact}"],
        "model_sha256": copied if aoti else (sha if isinstance(sha, str) else copied),
        "platform": platform,
        "max_batch_size": request.max_batch_size,
        "inputs": entries["input"],
        "outputs": entries["output"],
        "instance_kind": instance_kind,
        "warnings": warnings,
    }
