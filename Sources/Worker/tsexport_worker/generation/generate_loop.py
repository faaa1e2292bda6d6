"""The greedy loop over cached generation artifacts (cache_split.py writes them), with torch alone: no transformers
import, so the verifying process and any Python-free port (examples/generate/main.cpp) follow the same rules.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, cast

import torch

GENERATION_NAME = "tsexport/generation.json"
STEP_FILE = "step.pt"


def left_pad(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, length - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, length - len(prompt):] = 1
    return ids, mask


def token_id_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def generation_picker(model: Any) -> Callable[[str], Any]:
    """A setting from the model's generation_config, else its config (attribute reads only: no transformers)."""
    config = getattr(model, "config", None)
    generation = getattr(model, "generation_config", None)

    def pick(name: str) -> Any:
        value = getattr(generation, name, None) if generation is not None else None
        return value if value is not None else getattr(config, name, None)

    return pick


def suppressed_ids(
    model: Any, pick: Callable[[str], Any], unapplied_defaults: dict[str, Any]
) -> tuple[list[int], dict[str, Any]]:
    """The ids the loop always blocks (suppress_tokens and one-token bad words, which generate() bans at every step),
    and the settings it does not apply: longer bad words, and every generation_config setting of
    `unapplied_defaults` that differs from its no-op value."""
    suppress = token_id_list(pick("suppress_tokens"))
    unapplied: dict[str, Any] = {}
    for words in pick("bad_words_ids") or []:
        if len(words) == 1:
            suppress.append(int(words[0]))
        else:
            unapplied.setdefault("bad_words_ids", []).append(list(words))
    generation = getattr(model, "generation_config", None)
    for name, neutral in unapplied_defaults.items():
        value = getattr(generation, name, neutral) if generation is not None else neutral
        if value is not None and value != neutral:
            unapplied[name] = value
    return suppress, unapplied


def _load(path: str) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    extra = {GENERATION_NAME: ""}
    module: Any = torch.jit.load(path, map_location="cpu", _extra_files=extra)  # type: ignore[no-untyped-call]
    module.eval()
    return cast(torch.jit.ScriptModule, module), cast(dict[str, Any], json.loads(extra[GENERATION_NAME]))


def load_artifacts(artifacts_dir: str) -> tuple[dict[str, Any], dict[str, torch.jit.ScriptModule]]:
    """The interface (read from step.pt's embedded generation.json) and every artifact it names."""
    _, spec = _load(os.path.join(artifacts_dir, STEP_FILE))
    modules = {role: _load(os.path.join(artifacts_dir, entry["file"]))[0]
               for role, entry in spec["artifacts"].items()}
    return spec, modules


class LogitsRules:
    """generate()'s greedy logits processors, as the interface records them."""

    def __init__(self, spec: dict[str, Any], prompt_length: int, max_new_tokens: int) -> None:
        self.spec = spec
        self.prompt_length = prompt_length
        self.max_total = prompt_length + max_new_tokens
        forced_bos = spec["forced_bos_token_id"]
        self.begin_index = prompt_length + (1 if prompt_length == 1 and forced_bos is not None else 0)

    def apply(self, logits: torch.Tensor, cur_len: int) -> torch.Tensor:
        spec = self.spec
        logits = logits.clone()
        low = float("-inf")
        eos = spec["eos_token_ids"]
        if eos and (cur_len < spec["min_length"] or cur_len - self.prompt_length < spec["min_new_tokens"]):
            logits[:, eos] = low
        if spec["forced_bos_token_id"] is not None and cur_len == 1:
            logits[:] = low
            logits[:, int(spec["forced_bos_token_id"])] = 0
        if spec["forced_eos_token_id"] is not None and cur_len == self.max_total - 1:
            logits[:] = low
            logits[:, token_id_list(spec["forced_eos_token_id"])] = 0
        if spec["suppress_token_ids"]:
            logits[:, spec["suppress_token_ids"]] = low
        if spec["begin_suppress_token_ids"] and cur_len == self.begin_index:
            logits[:, spec["begin_suppress_token_ids"]] = low
        return logits


def _drift(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


Loaded = tuple[dict[str, Any], dict[str, torch.jit.ScriptModule]]


def greedy_with_drift(artifacts: str | Loaded, prompt_ids: list[list[int]], max_new_tokens: int,
                      check: bool = True) -> tuple[list[list[int]], list[float]]:
    """Greedy generation from the artifacts (a directory, or what load_artifacts returned; torch.jit only), and,
    when `check`, each step's max abs error between the cached step's logits and full.pt's (uncached) logits for
    the same sequence: a cached step that drifts from the model shows there."""
    spec, modules = load_artifacts(artifacts) if isinstance(artifacts, str) else artifacts
    max_length, pad = int(spec["max_length"]), int(spec["pad_token_id"])
    eos = torch.tensor(spec["eos_token_ids"] or [-1], dtype=torch.long)
    batch = len(prompt_ids)
    emitted: list[torch.Tensor] = []
    drifts: list[float] = []
    finished = torch.zeros(batch, dtype=torch.bool)
    with torch.no_grad():
        if spec["kind"] == "decoder-only":
            ids, mask = left_pad(prompt_ids, pad)
            length = ids.shape[1]
            if length + max_new_tokens - 1 > max_length:
                raise ValueError(f"{length} prompt slots + {max_new_tokens - 1} fed tokens exceed max_length "
                                 f"{max_length}")
            buffer_ids = torch.full((batch, max_length), pad, dtype=torch.long)
            buffer_ids[:, :length] = ids
            buffer_mask = torch.zeros((batch, max_length), dtype=torch.long)
            buffer_mask[:, :length] = mask
            logits, keys, values = modules["prefill"](ids, mask)
            real = mask.sum(-1)
            rules = LogitsRules(spec, length, max_new_tokens)
            for i in range(max_new_tokens):
                if check:
                    drifts.append(_drift(logits, modules["full"](
                        buffer_ids, buffer_mask, torch.tensor([length + i - 1]))[0]))
                token = rules.apply(logits, length + i).argmax(-1)
                token[finished] = pad
                emitted.append(token)
                finished |= torch.isin(token, eos)
                if bool(finished.all()) or i == max_new_tokens - 1:
                    break
                slot = length + i
                buffer_ids[:, slot] = token
                buffer_mask[:, slot] = 1
                logits, keys, values = modules["step"](
                    token[:, None], (real + i)[:, None], torch.tensor([slot]), buffer_mask, keys, values)
        else:
            if max_new_tokens > max_length:
                raise ValueError(f"{max_new_tokens} new tokens exceed max_length {max_length}")
            ids, mask = left_pad(prompt_ids, pad)
            hidden, cross_k, cross_v = modules["encoder"](ids, mask)
            shape = (int(spec["layers"]), batch, int(spec["heads"]), max_length, int(spec["head_dim"]))
            keys = torch.zeros(shape, dtype=hidden.dtype)
            values = torch.zeros(shape, dtype=hidden.dtype)
            decoder_mask = torch.zeros((batch, max_length), dtype=torch.long)
            buffer_ids = torch.full((batch, max_length), pad, dtype=torch.long)
            token = torch.full((batch,), int(spec["decoder_start_token_id"]), dtype=torch.long)
            rules = LogitsRules(spec, 1, max_new_tokens)
            for t in range(max_new_tokens):
                position = torch.tensor([t])
                decoder_mask[:, t] = 1
                buffer_ids[:, t] = token
                logits, keys, values = modules["step"](token[:, None], position, decoder_mask, keys, values,
                                                       cross_k, cross_v, hidden, mask)
                if check:
                    drifts.append(_drift(logits, modules["full"](buffer_ids, hidden, mask, position)[0]))
                token = rules.apply(logits, 1 + t).argmax(-1)
                token[finished] = pad
                emitted.append(token)
                finished |= torch.isin(token, eos)
                if bool(finished.all()):
                    break
    tokens = torch.stack(emitted, 1) if emitted else torch.zeros((batch, 0), dtype=torch.long)
    return [[int(v) for v in row] for row in tokens.tolist()], drifts


def greedy(artifacts_dir: str | Loaded, prompt_ids: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy generation from the artifacts alone: the new tokens of each row (after the prompt for decoder-only,
    after the start token for encoder-decoder), equal-length rows padded after eos as generate()'s are."""
    return greedy_with_drift(artifacts_dir, prompt_ids, max_new_tokens, check=False)[0]


def max_drift(artifacts_dir: str, prompt_ids: list[list[int]], max_new_tokens: int) -> float:
    """The largest per-step difference between the cached step's logits and the uncached model's."""
    drifts = greedy_with_drift(artifacts_dir, prompt_ids, max_new_tokens, check=True)[1]
    return max(drifts) if drifts else 0.0


def greedy_uncached(artifacts: str | Loaded, prompt_ids: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """The same loop with full.pt alone (the whole buffer recomputed every step): the speed baseline, and a second
    route to the same tokens."""
    spec, modules = load_artifacts(artifacts) if isinstance(artifacts, str) else artifacts
    max_length, pad = int(spec["max_length"]), int(spec["pad_token_id"])
    eos = torch.tensor(spec["eos_token_ids"] or [-1], dtype=torch.long)
    batch = len(prompt_ids)
    emitted: list[torch.Tensor] = []
    finished = torch.zeros(batch, dtype=torch.bool)
    buffer_ids = torch.full((batch, max_length), pad, dtype=torch.long)
    with torch.no_grad():
        ids, mask = left_pad(prompt_ids, pad)
        if spec["kind"] == "decoder-only":
            start = ids.shape[1]
            buffer_ids[:, :start] = ids
            buffer_mask = torch.zeros((batch, max_length), dtype=torch.long)
            buffer_mask[:, :start] = mask
        else:
            start = 1
            buffer_ids[:, 0] = int(spec["decoder_start_token_id"])
            hidden = modules["encoder"](ids, mask)[0]
        if start + max_new_tokens - 1 > max_length:
            raise ValueError(f"{start} + {max_new_tokens - 1} slots exceed max_length {max_length}")
        rules = LogitsRules(spec, start, max_new_tokens)
        for i in range(max_new_tokens):
            position = torch.tensor([start + i - 1])
            if spec["kind"] == "decoder-only":
                logits = modules["full"](buffer_ids, buffer_mask, position)[0]
            else:
                logits = modules["full"](buffer_ids, hidden, mask, position)[0]
            token = rules.apply(logits, start + i).argmax(-1)
            token[finished] = pad
            emitted.append(token)
            finished |= torch.isin(token, eos)
            if bool(finished.all()) or i == max_new_tokens - 1:
                break
            buffer_ids[:, start + i] = token
            if spec["kind"] == "decoder-only":
                buffer_mask[:, start + i] = 1
    return [[int(v) for v in row] for row in torch.stack(emitted, 1).tolist()]


def tokens_per_second(artifacts_dir: str, prompt_ids: list[list[int]], max_new_tokens: int, repeats: int = 3,
                      threads: int | None = 1) -> dict[str, Any]:
    """Generated tokens per second (best of `repeats`), cached (prefill/encoder + step) against uncached (full.pt
    over the whole buffer every step), at `threads` intra-op threads. The eos rule is left on: pick prompts and a
    model that do not stop early, or compare the token counts reported."""
    import time

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        result: dict[str, Any] = {"threads": torch.get_num_threads(), "max_new_tokens": max_new_tokens}
        loaded = load_artifacts(artifacts_dir)
        for name, run in (("cached", greedy), ("uncached", greedy_uncached)):
            run(loaded, prompt_ids, max_new_tokens)  # warm-up (the first TorchScript runs optimise)
            best = float("inf")
            count = 0
            for _ in range(repeats):
                begin = time.perf_counter()
                tokens = run(loaded, prompt_ids, max_new_tokens)
                best = min(best, time.perf_counter() - begin)
                count = sum(len(row) for row in tokens)
            result[f"{name}_tokens"] = count
            result[f"{name}_tokens_per_s"] = count / best
        result["speedup"] = result["cached_tokens_per_s"] / result["uncached_tokens_per_s"]
        return result
    finally:
        torch.set_num_threads(previous)
