"""Generation with a key/value cache outside Python (cache_split.py): the cached artifacts of a tiny GPT-2
(prefill.pt + step.pt) and of tiny Marian / BART (encoder.pt + step.pt) against model.generate(), token for token;
the loop in a process without transformers; the libtorch example; drift detection."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nativekit
import pytest
import torch
from workerkit import run_python

from tsexport_worker.generation import cache_split

REPO = Path(__file__).resolve().parents[2]
MAX_LENGTH = 64
NEW_TOKENS = 12
# The drift limit the Swift side sends for float32 (SplitBounds.driftLimit: max(1e-3, 100 * atol 1e-5)).
DRIFT_LIMIT = 1e-3
GPT2: dict[str, Any] = {"vocab_size": 99, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 128,
                        "bos_token_id": 1, "eos_token_id": 82, "pad_token_id": 0, "initializer_range": 0.5}
# Left-padded in a batch: rows of 5, 2, 9 and 1 tokens; with seed 0 two rows reach eos (82) early, two do not.
GPT2_PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [42] * 9, [3]]
S2S: dict[str, Any] = {"vocab_size": 99, "d_model": 32, "encoder_layers": 2, "decoder_layers": 2,
                       "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 37,
                       "decoder_ffn_dim": 37, "max_position_embeddings": 128, "init_std": 0.2,
                       "scale_embedding": True}
# Marian: pad = decoder start = 98, eos 0 (forced at the last step, as Marian's config asks) and 14 (reached early
# by one row with seed 0).
MARIAN = {**S2S, "pad_token_id": 98, "decoder_start_token_id": 98, "eos_token_id": [0, 14],
          "forced_eos_token_id": 0}
S2S_PROMPTS = [[5, 6, 7, 8, 9, 0], [10, 11, 30, 40, 50, 0], [42, 43, 44, 45, 46, 0], [7, 0]]
# Grouped-query decoders: 4 query heads over 2 key/value heads. Mistral's every layer and Gemma 2's first layer see a
# window of 4 slots, which the 9-token prompt plus 12 new tokens outgrow (generate() differs without the window);
# Gemma 2 states head_dim 16 (not hidden / heads) and unties its head, which tied gives one repeated token.
GQA: dict[str, Any] = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "num_key_value_heads": 2, "intermediate_size": 37, "max_position_embeddings": 128,
                       "bos_token_id": 1, "eos_token_id": 82, "pad_token_id": 0, "initializer_range": 0.5}
DECODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaForCausalLM", GQA),
    "qwen2": ("Qwen2ForCausalLM", GQA),
    "mistral": ("MistralForCausalLM", {**GQA, "sliding_window": 4}),
    "gemma2": ("Gemma2ForCausalLM", {**GQA, "sliding_window": 4, "head_dim": 16, "tie_word_embeddings": False}),
    "phi3": ("Phi3ForCausalLM", GQA),
}
# Grouped-query encoder-decoder: T5Gemma states its encoder's and decoder's sizes in nested configs (4 query heads over
# 2 key/value heads); the first layer of each is a sliding window of 2 (bidirectional in the encoder, causal in the
# decoder), which the prompts and the 12 new tokens outgrow. A larger initializer_range gives varied tokens.
T5GEMMA_PART: dict[str, Any] = {**GQA, "head_dim": 8, "sliding_window": 2, "initializer_range": 2.0}
T5GEMMA: dict[str, Any] = {"encoder": T5GEMMA_PART, "decoder": T5GEMMA_PART, "vocab_size": 99, "bos_token_id": 1,
                           "eos_token_id": 82, "pad_token_id": 0, "decoder_start_token_id": 1,
                           "tie_word_embeddings": False}
DECODER_ONLY = ["gpt2", *DECODERS]
ALL = [*DECODER_ONLY, "marian", "bart", "t5gemma"]


def _model(cls: str, config: dict[str, Any]) -> torch.nn.Module:
    import transformers

    torch.manual_seed(0)
    config_cls = getattr(transformers, cls.replace("ForCausalLM", "Config").replace("LMHeadModel", "Config")
                         .replace("MTModel", "Config").replace("ForConditionalGeneration", "Config"))
    model: torch.nn.Module = getattr(transformers, cls)(config_cls(**config)).eval()
    return model


def _generate(model: torch.nn.Module, prompts: list[list[int]], pad: int, new_tokens: int) -> list[list[int]]:
    """model.generate(greedy) on the left-padded prompts: the tokens after the prompt (after the start token)."""
    ids, mask = cache_split.left_pad(prompts, pad)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1,  # type: ignore[operator]
                             max_new_tokens=new_tokens)
    skip = 1 if model.config.is_encoder_decoder else ids.shape[1]  # type: ignore[union-attr]
    return [[int(v) for v in row] for row in out[:, skip:].tolist()]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[torch.nn.Module, str, dict[str, Any]]]:
    """The tiny models, each traced once: name -> (model, artifacts dir, the returned interface)."""
    out = {}
    decoder_example = torch.tensor([[4, 5, 6, 7, 8, 9], [9, 8, 7, 6, 5, 4]])
    models = {"gpt2": ("GPT2LMHeadModel", GPT2, "decoder-only", decoder_example),
              **{name: (cls, config, "decoder-only", decoder_example) for name, (cls, config) in DECODERS.items()},
              "marian": ("MarianMTModel", MARIAN, "encoder-decoder", torch.tensor([[5, 6, 7, 8, 9, 0]] * 2)),
              "bart": ("BartForConditionalGeneration", S2S, "encoder-decoder", torch.tensor([[5, 6, 7, 8, 9, 2]] * 2)),
              "t5gemma": ("T5GemmaForConditionalGeneration", T5GEMMA, "encoder-decoder",
                          torch.tensor([[5, 6, 7, 8, 9, 0]] * 2))}
    for name, (cls, config, kind, example) in models.items():
        model = _model(cls, config)
        directory = str(tmp_path_factory.mktemp(name))
        description = cache_split.trace_cached(model, kind, MAX_LENGTH, example, directory, DRIFT_LIMIT)
        out[name] = (model, directory, description)
    return out


def _prompt_sets(name: str) -> list[list[list[int]]]:
    prompts = GPT2_PROMPTS if name in DECODER_ONLY else S2S_PROMPTS
    return [prompts, *[[p] for p in prompts], prompts[:2]]


@pytest.mark.parametrize("name", ALL)
def test_cached_greedy_matches_generate(exported: dict[str, Any], name: str) -> None:
    model, directory, description = exported[name]
    pad = description["pad_token_id"]
    for prompts in _prompt_sets(name):
        want = _generate(model, prompts, pad, NEW_TOKENS)
        got, drifts = cache_split.greedy_with_drift(directory, prompts, NEW_TOKENS)
        assert got == want, prompts
        assert max(drifts) < DRIFT_LIMIT
        assert cache_split.greedy_uncached(directory, prompts, NEW_TOKENS) == want


def test_the_tests_cover_early_eos_padding_and_distinct_rows(exported: dict[str, Any]) -> None:
    """The fixtures are not degenerate: some rows stop early (pad after eos), others run to the end; rows differ."""
    for name in ("gpt2", "marian"):
        model, _, description = exported[name]
        rows = _generate(model, GPT2_PROMPTS if name == "gpt2" else S2S_PROMPTS, description["pad_token_id"],
                         NEW_TOKENS)
        eos = set(description["eos_token_ids"])
        stopped = [row for row in rows if eos & set(row[:-1])]
        assert stopped and len(stopped) < len(rows), rows
        assert len({tuple(row) for row in rows}) > 1, rows


def test_grouped_query_caches_use_the_key_value_heads(exported: dict[str, Any]) -> None:
    """The buffer holds the key/value heads and the stated head_dim; the windows are the config's, per layer."""
    for name in DECODERS:
        description = exported[name][2]
        head_dim = 16 if name == "gemma2" else 8
        assert (description["layers"], description["heads"], description["head_dim"]) == (2, 2, head_dim), name
        spec, modules = cache_split.load_artifacts(exported[name][1])
        ids, mask = cache_split.left_pad([[5, 6, 7]], 0)
        with torch.no_grad():
            _, keys, _ = modules["prefill"](ids, mask)
        assert tuple(keys.shape) == (2, 1, 2, MAX_LENGTH, head_dim), name
    windows = {name: exported[name][2]["sliding_windows"] for name in DECODERS}
    assert windows == {"llama": [None, None], "qwen2": [None, None], "mistral": [4, 4], "gemma2": [4, None],
                       "phi3": [None, None]}


def test_grouped_query_encoder_decoder_caches_use_the_nested_decoder_config(exported: dict[str, Any]) -> None:
    """T5Gemma: the self-attention buffer and the cross-attention keys/values hold the 2 key/value heads of head_dim 8
    the nested decoder config states; the decoder's windows are its layer types'; the sliding windows (encoder and
    decoder) change these tokens, and the rows are varied."""
    model, directory, description = exported["t5gemma"]
    assert (description["layers"], description["heads"], description["head_dim"]) == (2, 2, 8)
    assert description["sliding_windows"] == [2, None]
    _, modules = cache_split.load_artifacts(directory)
    ids, mask = cache_split.left_pad([[5, 6, 7]], 0)
    with torch.no_grad():
        hidden, cross_keys, cross_values = modules["encoder"](ids, mask)
    assert tuple(hidden.shape) == (1, 3, 32)
    assert tuple(cross_keys.shape) == tuple(cross_values.shape) == (2, 1, 2, 3, 8)
    rows = _generate(model, S2S_PROMPTS, description["pad_token_id"], NEW_TOKENS)
    wide = _model("T5GemmaForConditionalGeneration", {**T5GEMMA, "encoder": {**T5GEMMA_PART, "sliding_window": 1000},
                                                      "decoder": {**T5GEMMA_PART, "sliding_window": 1000}})
    assert rows != _generate(wide, S2S_PROMPTS, description["pad_token_id"], NEW_TOKENS)
    assert len({tuple(row) for row in rows}) == len(rows) and sum(len(set(row)) > 4 for row in rows) >= 3, rows


@pytest.mark.parametrize("name", ["mistral", "gemma2"])
def test_the_sliding_window_shapes_these_tokens(exported: dict[str, Any], name: str) -> None:
    """The prompts outgrow the window, and generate() without it differs: the window is exercised, and the rows
    differ, most of them not one repeated token."""
    model, _, description = exported[name]
    cls, config = DECODERS[name]
    wide = _model(cls, {**config, "sliding_window": 1000})
    pad = description["pad_token_id"]
    rows = _generate(model, GPT2_PROMPTS, pad, NEW_TOKENS)
    assert rows != _generate(wide, GPT2_PROMPTS, pad, NEW_TOKENS)
    assert len({tuple(row) for row in rows}) == len(rows) and sum(len(set(row)) > 2 for row in rows) >= 3, rows


def test_interface_is_returned_and_embedded(exported: dict[str, Any]) -> None:
    _, directory, description = exported["gpt2"]
    assert description["files"] == ["prefill.pt", "step.pt", "full.pt"]
    assert sorted(os.listdir(directory)) == ["full.pt", "generation.json", "prefill.pt", "step.pt"]
    step = description["artifacts"]["step"]
    assert [t["name"] for t in step["inputs"]] == ["input_ids", "position_ids", "cache_position", "attention_mask",
                                                   "past_keys", "past_values"]
    assert [t["name"] for t in step["outputs"]] == ["logits", "past_keys", "past_values"]
    assert (description["layers"], description["heads"], description["head_dim"]) == (2, 4, 8)
    assert description["eos_token_ids"] == [82] and description["pad_token_id"] == 0
    embedded = {k: v for k, v in description.items() if k != "traced"}
    for file in description["files"]:
        extra = {cache_split.GENERATION_NAME: ""}
        torch.jit.load(os.path.join(directory, file), _extra_files=extra)  # type: ignore[no-untyped-call]
        assert json.loads(extra[cache_split.GENERATION_NAME]) == embedded
    marian = exported["marian"][2]
    assert marian["files"] == ["encoder.pt", "step.pt", "full.pt"]
    assert marian["decoder_start_token_id"] == 98 and marian["forced_eos_token_id"] == 0
    assert marian["eos_token_ids"] == [0, 14]


@pytest.mark.parametrize("name", ALL)
def test_every_tracer_warning_is_explained(exported: dict[str, Any], name: str) -> None:
    """transformers 5.24's TracerWarnings on these traces are all reviewed ones (a new one fails here)."""
    traced = exported[name][2]["traced"]
    assert set(traced) == set(exported[name][2]["artifacts"])
    for role, report in traced.items():
        assert report["unexplained_tracer_warnings"] == [], (role, report["tracer_warnings"])
        assert report["max_abs_error_at_example"] <= DRIFT_LIMIT


def test_step_writes_only_its_slot(exported: dict[str, Any]) -> None:
    """The step returns the input buffer with exactly cache_position's keys/values written; the inputs are untouched."""
    _, directory, description = exported["gpt2"]
    spec, modules = cache_split.load_artifacts(directory)
    ids, mask = cache_split.left_pad([[5, 6, 7], [8, 9]], 0)
    with torch.no_grad():
        _, keys, values = modules["prefill"](ids, mask)
        assert keys.shape == (2, 2, 4, MAX_LENGTH, 8) and bool((keys[:, :, :, 3:] == 0).all())
        buffer = torch.zeros(2, MAX_LENGTH, dtype=torch.long)
        buffer[:, :3] = mask
        buffer[:, 3] = 1
        before = keys.clone()
        _, new_keys, _ = modules["step"](torch.tensor([[10], [11]]), torch.tensor([[3], [2]]), torch.tensor([3]),
                                         buffer, keys, values)
    assert torch.equal(keys, before)
    changed = (new_keys != keys).flatten(0, 2).any(0).any(-1)
    assert changed.nonzero().flatten().tolist() == [3]


def test_generation_without_transformers_in_the_process(exported: dict[str, Any]) -> None:
    """The loop needs torch alone: a fresh process that cannot import transformers gives generate()'s tokens."""
    code = """
        import json, sys
        sys.modules["transformers"] = None  # any import of it fails
        from tsexport_worker.generation.cache_split import greedy, max_drift
        runs = json.loads(sys.argv[1])
        out = [[greedy(d, p, n), max_drift(d, p, n)] for d, p, n in runs]
        del sys.modules["transformers"]
        assert "transformers" not in sys.modules
        print(json.dumps({"out": out, "modules": sorted(m for m in sys.modules if m.startswith("transformers"))}))
    """
    runs, want = [], []
    for name, prompts in (("gpt2", GPT2_PROMPTS), ("marian", S2S_PROMPTS), ("bart", S2S_PROMPTS)):
        model, directory, description = exported[name]
        runs.append([directory, prompts, NEW_TOKENS])
        want.append(_generate(model, prompts, description["pad_token_id"], NEW_TOKENS))
    proc = run_python(code, json.dumps(runs))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["modules"] == []
    assert [tokens for tokens, _ in result["out"]] == want
    assert all(drift < DRIFT_LIMIT for _, drift in result["out"])


def _corrupt(directory: str, target: str, artifact: str) -> str:
    """A copy of the artifacts with one weight of `artifact` scaled (its embedded interface kept)."""
    shutil.copytree(directory, target)
    path = os.path.join(target, artifact)
    extra = {cache_split.GENERATION_NAME: ""}
    module: Any = torch.jit.load(path, _extra_files=extra)  # type: ignore[no-untyped-call]
    name, weight = next((n, p) for n, p in module.named_parameters()
                        if p.dim() == 2 and ("transformer.h.1." in n or "decoder.layers.1." in n))
    with torch.no_grad():
        weight.mul_(1.5)
    torch.jit.save(module, path, _extra_files=extra)
    return name


@pytest.mark.parametrize("name", ["gpt2", "marian"])
def test_a_drifting_step_is_detected(exported: dict[str, Any], tmp_path: Path, name: str) -> None:
    _, directory, _ = exported[name]
    prompts = GPT2_PROMPTS if name == "gpt2" else S2S_PROMPTS
    clean = cache_split.max_drift(directory, prompts, NEW_TOKENS)
    assert clean < DRIFT_LIMIT
    corrupted = str(tmp_path / "corrupt")
    _corrupt(directory, corrupted, "step.pt")
    drift = cache_split.max_drift(corrupted, prompts, NEW_TOKENS)
    assert drift > 10 * DRIFT_LIMIT, drift


def test_speed_measurement_runs(exported: dict[str, Any]) -> None:
    _, directory, _ = exported["gpt2"]
    result = cache_split.tokens_per_second(directory, [[5, 6, 7]], 8, repeats=1)
    assert result["threads"] == 1 and result["cached_tokens"] == result["uncached_tokens"] > 0
    assert result["cached_tokens_per_s"] > 0 and result["uncached_tokens_per_s"] > 0


def test_refusals() -> None:
    model = _model("GPT2LMHeadModel", GPT2)
    with pytest.raises(ValueError, match="kind"):
        cache_split.trace_cached(model, "seq2seq", 16, torch.tensor([[5, 6]]), "/nonexistent", DRIFT_LIMIT)
    with pytest.raises(ValueError, match="not an encoder-decoder"):
        cache_split.trace_cached(model, "encoder-decoder", 16, torch.tensor([[5, 6]]), "/nonexistent", DRIFT_LIMIT)
    with pytest.raises(ValueError, match="positions"):
        cache_split.trace_cached(model, "decoder-only", 256, torch.tensor([[5, 6]]), "/nonexistent", DRIFT_LIMIT)


@pytest.fixture(scope="session")
def generate_binary() -> str:
    """examples/generate, built once (shared with the Swift tests) against this Python's torch."""
    return str(nativekit.generate_example())


@pytest.mark.parametrize("name", ALL)
def test_cpp_example_matches_generate(exported: dict[str, Any], generate_binary: str, name: str) -> None:
    model, directory, description = exported[name]
    for prompt in GPT2_PROMPTS if name in DECODER_ONLY else S2S_PROMPTS:
        want = _generate(model, [prompt], description["pad_token_id"], NEW_TOKENS)[0]
        proc = subprocess.run([generate_binary, directory, str(NEW_TOKENS), *map(str, prompt)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        lines = proc.stdout.strip().splitlines()
        assert len(lines) == 1
        assert [int(v) for v in lines[0].split()] == want, prompt
