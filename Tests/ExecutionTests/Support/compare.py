"""Independent check used by the Swift end-to-end tests: reload a bundle's model.pt with torch in a separate
process, rebuild the eager transformers model from the bundle's record, run both on the recorded sample inputs
(and on fresh inputs at another length when asked) and compare at a tolerance. Prints one JSON line."""
from __future__ import annotations

import json
import sys
from typing import Any

import torch
import transformers
from safetensors.torch import load_file


def eager_model(record: dict[str, Any], manifest_dir: str) -> torch.nn.Module:
    spec = record["fingerprint_inputs"]["manifest"]["spec"]["model"]
    cls = getattr(transformers, record["model_class"])
    if "pretrained" in spec:
        import os
        path = spec["pretrained"]
        if not os.path.isabs(path):
            path = os.path.normpath(os.path.join(manifest_dir, path))
        model = cls.from_pretrained(path, attn_implementation="eager")
    else:
        torch.manual_seed(spec.get("seed", 0))
        config = cls.config_class(**spec.get("config", {}))
        config._attn_implementation = "eager"
        model = cls(config)
    return model.eval()


def main() -> None:
    bundle, manifest_dir = sys.argv[1], sys.argv[2]
    record = json.load(open(f"{bundle}/record.json"))
    names = [s["name"] for s in record["input_signature"]]
    traced = torch.jit.load(f"{bundle}/model.pt")
    model = eager_model(record, manifest_dir)
    inputs = load_file(f"{bundle}/sample_inputs.safetensors")
    args = [inputs[f"traced/{n}"] for n in names]
    with torch.no_grad():
        got = traced(*args)
        want = model(**dict(zip(names, args))).to_tuple()
    got = got if isinstance(got, tuple) else (got,)
    errors = [float((g - w).abs().max()) for g, w in zip(got, want) if isinstance(w, torch.Tensor)]
    out: dict[str, Any] = {"max_abs_error": max(errors), "outputs": len(got), "input_names": names,
                           "sample_inputs": {n: args[i].tolist() for i, n in enumerate(names)}}
    if "token_type_ids" in names:
        # The segment ids must reach token_type_ids: feeding them as attention_mask gives a different result.
        other = dict(zip(names, args))
        tt = other.pop("token_type_ids")
        with torch.no_grad():
            as_mask = model(**other, attention_mask=tt).to_tuple()[0] if "attention_mask" not in other else None
        out["segments_as_mask_differs"] = bool(as_mask is not None and (as_mask - got[0]).abs().max() > 1e-3)
    out["untied_parameters"] = record.get("untied_parameters", [])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
