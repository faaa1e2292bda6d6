"""The bench's eager side: the model the request's `eager.model` describes, loaded as the export loaded it.

The Swift side decides whether the eager model can be rebuilt (the pretrained folder found, the remote-code and
pickle permissions given) and sends either the model (the export job's model keys, pretrained resolved) or the
reason it cannot; this module only loads what it is given and reports a load that fails.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import WorkerError, describe
from ..outputs import flatten
from ..protocol import ModelSpec
from ..runtime import probe
from .bench_timing import status_kib, trim_heap


@dataclass
class Eager:
    available: bool
    reason: str | None = None
    call: Callable[[list[torch.Tensor]], Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def rebuild_eager(
    spec: ModelSpec | None,
    missing: str | None,
    names: list[str],
    traced: list[torch.Tensor],
    references: dict[str, torch.Tensor],
    device: str,
) -> Eager:
    """The eager model of the request (`spec`), or unavailable with the request's reason (`missing`), or with why
    the load failed here."""
    if spec is None:
        return Eager(False, missing)
    info: dict[str, Any] = {"attn_implementation": spec.attn_implementation}
    if spec.pretrained is not None:
        info["pretrained"] = spec.pretrained
    if "transformers" in probe.missing_packages():
        return Eager(False, "transformers cannot be imported in this Python runtime", info=info)
    from ..export.trace import ForwardWrapper
    from ..runtime.load import load_model

    trim_heap()
    rss_before = status_kib("VmRSS")
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            loaded = load_model(spec)
    except WorkerError as error:
        return Eager(False, f"the eager model could not be rebuilt: {error.message}", info=info)
    except Exception as exc:  # noqa: BLE001 - the bench goes on without its eager side
        return Eager(False, f"the eager model could not be rebuilt: {describe(exc)}", info=info)
    model = loaded.model.to(device)
    info["load_ms"] = round((time.perf_counter() - started) * 1000, 3)
    rss_after = status_kib("VmRSS")
    info["load_rss_delta_bytes"] = (rss_after - rss_before) * 1024 if rss_after and rss_before else None
    wrapper = ForwardWrapper(model, names, tuple_outputs=spec.torchscript, constants=spec.forward).eval()
    info["model_class"] = type(model).__name__
    # Is it the model the artifact came from? Compare with the recorded reference outputs at the traced shape.
    expected = [references[k] for k in sorted(
        (k for k in references if k.startswith("traced/output_")), key=lambda k: int(k.rsplit("_", 1)[1])
    )]
    if expected:
        try:
            with torch.no_grad():
                actual = [t for _, t in flatten(wrapper.call_model(*[t.to(device) for t in traced]))]
            errors = [
                float((a.detach().cpu().double() - e.double()).abs().max()) if a.shape == e.shape else math.inf
                for a, e in zip(actual, expected, strict=False)
            ]
            info["reference_max_abs_error"] = max(errors) if errors and len(actual) == len(expected) else None
        except Exception as exc:  # noqa: BLE001 - the check is reported, the eager side still benches
            info["reference_max_abs_error"] = None
            info["reference_error"] = describe(exc)
    return Eager(True, None, call=lambda args: wrapper.call_model(*args), info=info)
