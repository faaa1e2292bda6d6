"""Independent reload check used by the Swift end-to-end tests: for each artifact path given (a bundle's or a
deploy's model.pt, a model.pt2, or a TorchServe .mar), load it with torch in this separate process, run it on the
bundle's recorded traced-shape sample inputs, and compare it with the bundle's reference outputs. A model.pt is also
asked for its envelope and run one batch past the envelope's batch maximum, which it must refuse.

argv: BUNDLE ARTIFACT [BUNDLE ARTIFACT ...]. Prints one JSON line: artifact path → {max_abs_error, outputs,
envelope_batch, refusal}."""
from __future__ import annotations

import json
import os
import sys
import tempfile
import zipfile
from typing import Any

import torch
from safetensors.torch import load_file


def _flat(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flat(v)]
    return []


def _load(artifact: str, scratch: str) -> tuple[Any, bool]:
    """The loaded module and whether it is a TorchScript module."""
    if artifact.endswith(".pt2"):
        return torch._inductor.aoti_load_package(artifact), False
    if artifact.endswith(".mar"):
        with zipfile.ZipFile(artifact) as archive:
            member = next(n for n in archive.namelist() if n.endswith(".pt"))
            artifact = archive.extract(member, scratch)
    return torch.jit.load(artifact), True


def check(bundle: str, artifact: str, scratch: str) -> dict[str, Any]:
    record = json.load(open(os.path.join(bundle, "record.json")))
    names = [s["name"] for s in record["input_signature"]]
    samples = load_file(os.path.join(bundle, "sample_inputs.safetensors"))
    references = load_file(os.path.join(bundle, "reference_outputs.safetensors"))
    args = [samples[f"traced/{n}"] for n in names]
    want = [references[f"traced/output_{i}"] for i in range(len([k for k in references if k.startswith("traced/output_")]))]
    module, scripted = _load(artifact, scratch)
    with torch.no_grad():
        got = _flat(module(*args))
    errors = [float((g.float() - w.float()).abs().max()) for g, w in zip(got, want, strict=True)]
    out: dict[str, Any] = {"max_abs_error": max(errors), "outputs": len(got), "envelope_batch": None, "refusal": None}
    if scripted:
        envelope = json.loads(module.tsexport_envelope())
        batch = next(d["max"] for d in envelope["inputs"][0]["dims"] if d["role"] == "batch")
        out["envelope_batch"] = batch
        wide = [a[:1].repeat(batch + 1, *([1] * (a.dim() - 1))) for a in args]
        try:
            with torch.no_grad():
                module(*wide)
        except torch.jit.Error as error:
            out["refusal"] = str(error).strip().splitlines()[-1]
    return out


def main() -> None:
    pairs = sys.argv[1:]
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for bundle, artifact in zip(pairs[0::2], pairs[1::2], strict=True):
            result[artifact] = check(bundle, artifact, scratch)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
