"""TorchServe handler for a tsexport bundle: named tensors in a JSON body → the module's positional inputs.

tsexport's deploy op ships this file into the .mar (deploy kind `torchserve`); it runs inside TorchServe, which
provides `ts` and torch, and imports nothing from tsexport. The archive also holds `tsexport_signature.json` (the
bundle's input and output signatures, in order) and the bundle's `record.json`.

Request body (Content-Type: application/json), one object per request, every input of the signature by name, as
nested lists of the recorded rank (the dtype comes from the signature):
    {"input_ids": [[101, 2040, 2001]], "token_type_ids": [[0, 0, 0]]}
Response: the outputs by their recorded names, as nested lists:
    {"last_hidden_state": [[[...]]], "pooler_output": [[...]]}
Requests of a TorchServe batch run one by one: the trace is only known to generalise over the shapes tsexport checked.

TorchServe picks the handler class as the only class defined in this module: keep it the only one.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from ts.torch_handler.base_handler import BaseHandler

SIGNATURE_FILE = "tsexport_signature.json"
DTYPES = {
    "bool": torch.bool,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def _flatten(output: Any) -> list[torch.Tensor]:
    """Tensors of a (nested) output in order, as tsexport's record lists them: tuples and lists by position, dicts
    by key."""
    if isinstance(output, torch.Tensor):
        return [output]
    if output is None:
        return []
    if isinstance(output, dict):
        return [t for value in output.values() for t in _flatten(value)]
    if isinstance(output, (tuple, list)):
        return [t for value in output for t in _flatten(value)]
    raise ValueError(f"the module returned a {type(output).__name__}, not tensors")


def _body(row: Any) -> dict[str, Any]:
    """One request's JSON object: TorchServe passes the body as `body` or `data`, decoded or as bytes."""
    body = row
    if isinstance(row, dict) and ("body" in row or "data" in row):
        body = row.get("body") if row.get("body") is not None else row.get("data")
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8")
    if isinstance(body, str):
        body = json.loads(body)
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object of named tensors")
    return body


class TsexportHandler(BaseHandler):  # type: ignore[misc]
    """Binds a JSON object of named tensors to the positional inputs of a tsexport TorchScript module."""

    def initialize(self, context: Any) -> None:
        model_dir = context.system_properties.get("model_dir")
        with open(os.path.join(model_dir, SIGNATURE_FILE), encoding="utf-8") as handle:
            signature = json.load(handle)
        self.inputs = signature["input_signature"]
        self.outputs = signature["output_signature"]
        hardware = signature.get("hardware")
        if hardware == "inf1":
            import torch_neuron  # noqa: F401  (registers the Neuron ops before torch.jit.load)
        elif hardware == "inf2":
            import torch_neuronx  # noqa: F401  (registers the Neuron ops before torch.jit.load)
        super().initialize(context)

    def tensors(self, body: dict[str, Any]) -> list[torch.Tensor]:
        """The request's tensors in the signature's order; a ValueError names what is missing or wrong."""
        names = [spec["name"] for spec in self.inputs]
        missing = [name for name in names if name not in body]
        unknown = sorted(set(body) - set(names))
        if missing or unknown:
            parts = [f"missing {', '.join(missing)}"] if missing else []
            parts += [f"unknown {', '.join(unknown)}"] if unknown else []
            raise ValueError(f"the request must name exactly the inputs {', '.join(names)}: {'; '.join(parts)}")
        tensors = []
        for spec in self.inputs:
            tensor = torch.tensor(body[spec["name"]], dtype=DTYPES[spec["dtype"]])
            if tensor.dim() != len(spec["shape"]):
                raise ValueError(
                    f"input {spec['name']} has {tensor.dim()} dimensions; the model takes {len(spec['shape'])} "
                    f"(traced at shape {spec['shape']})"
                )
            tensors.append(tensor.to(self.device))
        return tensors

    def preprocess(self, data: list[Any]) -> list[list[torch.Tensor]]:
        return [self.tensors(_body(row)) for row in data]

    def inference(self, data: list[list[torch.Tensor]], *args: Any, **kwargs: Any) -> list[Any]:
        with torch.no_grad():
            return [self.model(*tensors) for tensors in data]

    def postprocess(self, data: list[Any]) -> list[dict[str, Any]]:
        answers = []
        for output in data:
            flat = _flatten(output)
            names = [spec["name"] for spec in self.outputs]
            if len(names) != len(flat):
                names = [f"output_{i}" for i in range(len(flat))]
            answers.append({name: t.detach().to("cpu").tolist() for name, t in zip(names, flat, strict=True)})
        return answers
