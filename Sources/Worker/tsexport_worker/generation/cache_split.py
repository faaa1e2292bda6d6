"""Generation with a key/value cache outside Python (issue 12): traced artifacts whose cache is explicit tensors.

Decoder-only (GPT2LMHeadModel): `prefill.pt` runs the left-padded prompt and returns the first logits and the cache,
`step.pt` runs one token against the cache and returns the next logits and the updated cache. Encoder-decoder
(MarianMTModel, BART): `encoder.pt` returns the encoder states and the cross-attention keys/values, `step.pt` runs one
decoder token against the self-attention cache. Both kinds also get `full.pt`, the uncached model over the whole
fixed buffer (the reference a loop compares a cached step with, and the baseline of the speed comparison).

The cache is a fixed buffer, [layers, batch, key/value heads, max_length, head_dim], so every shape is static: a step
writes its key/value at `cache_position` (index_copy_ inside transformers' own StaticLayer, given the buffer tensors)
and attends over the buffer through an explicit attention mask (kv_cache.py: the buffer's shape from the config, the
masks, sliding windows included). Every attention mask handed to the model is a ready 4D additive mask built there,
so none of transformers' data-dependent mask shortcuts (sdpa's is_causal skip, the
padding checks) are baked into a trace.

`trace_cached` writes the artifacts and returns the interface (recorded as "tsexport/generation.json" inside each
.pt). `greedy` / `greedy_with_drift` run the loop from the artifacts with torch alone (this module imports no
transformers at import time, so a verifier process can use it without transformers).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, cast

import torch

from .generate_loop import (  # noqa: F401  (re-exported)
    GENERATION_NAME,
    STEP_FILE,
    generation_picker,
    greedy,
    greedy_uncached,
    greedy_with_drift,
    left_pad,
    load_artifacts,
    max_drift,
    suppressed_ids,
    token_id_list,
    tokens_per_second,
)
from .kv_cache import cache_shape as _cache_shape
from .kv_cache import decoder_mask, layer_windows, static_cache
from .kv_cache import encoder_mask as _encoder_mask
from .kv_cache import key_mask as _key_mask
from .kv_cache import stacked as _stacked

INTERFACE_VERSION = 1
PREFILL_FILE = "prefill.pt"
ENCODER_FILE = "encoder.pt"
FULL_FILE = "full.pt"
KINDS = ("decoder-only", "encoder-decoder")
# Generation settings that greedy generate() would apply and this loop does not, with their no-op values.
UNAPPLIED_DEFAULTS: dict[str, Any] = {
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0, "sequence_bias": None, "exponential_decay_length_penalty": None,
    "guidance_scale": None, "remove_invalid_values": False,
}
# The TracerWarnings transformers 5.24 gives on these traces, each reviewed as harmless (by location, since the
# messages are generic); any other warning is reported under "unexplained_tracer_warnings".
EXPLAINED_TRACER_WARNINGS: dict[str, str] = {
    "sdpa_attention.py:148": "is_causal = q_length > 1 and attention_mask is None ...: every mask here is an explicit "
    "4D mask, so is_causal is False whatever the shape",
    "sdpa_attention.py:153": "is_causal.item() of that same always-False value",
    "cache_utils.py:422": "StaticLayer's initial cumulative_length constant, replaced by the cache_position input",
    "cache_utils.py:115": "DynamicLayer's empty initial keys (concatenated with the real ones)",
    "cache_utils.py:116": "DynamicLayer's empty initial values (concatenated with the real ones)",
    "cache_utils.py:148": "DynamicLayer.get_seq_length's emptiness test: the cross-attention cache is never empty in "
    "the step (source_length >= 1)",
    "cache_utils.py:2309": "EncoderDecoderCache.is_updated: True in the step (cross keys/values given), False in "
    "the encoder (computed there): fixed by construction",
    "sdpa_attention.py:121": "grouped-query attention's route (q_length == 1: queries packed per key/value head, "
    "else keys/values repeated per query head): both routes compute the same attention, so the traced one serves "
    "every prompt length",
    "sdpa_attention.py:36": "pack_gqa's mask test (shape[1] == 1): every mask here is [B, 1, Q, K] by construction",
    "functional.py:2595": "nn.functional.embedding's padding_idx range check (a constant)",
    "modeling_t5gemma.py:677": "T5Gemma's encoder embedding scale, sqrt(hidden_size): a config constant",
    "modeling_t5gemma.py:783": "T5Gemma's decoder embedding scale, sqrt(hidden_size): a config constant",
}


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


# ---------------------------------------------------------------------------------------------------------------
# The traced modules.


class DecoderOnlyPrefill(torch.nn.Module):
    """(input_ids [B,P], attention_mask [B,P]) -> (logits [B,V] at the last prompt slot, past_keys, past_values
    [L,B,H,max_length,D], the prompt in slots 0..P-1). Prompts are left-padded: position ids count real tokens."""

    def __init__(self, model: torch.nn.Module, max_length: int) -> None:
        super().__init__()
        self.model = model
        self.max_length = max_length
        self.layers, self.heads, self.head_dim = _cache_shape(model)
        self.windows = layer_windows(model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dtype = _model_dtype(self.model)
        batch, length = input_ids.shape[0], input_ids.shape[1]
        slots = torch.arange(length, device=input_ids.device)
        position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        buffer_mask = torch.zeros((batch, self.max_length), dtype=attention_mask.dtype, device=input_ids.device)
        buffer_mask = buffer_mask.index_copy(1, slots, attention_mask)
        empty = torch.zeros((self.layers, batch, self.heads, self.max_length, self.head_dim), dtype=dtype,
                            device=input_ids.device)
        start = torch.zeros((1,), dtype=torch.long, device=input_ids.device)
        cache = static_cache(self.max_length, empty, empty, start)
        output = self.model(input_ids=input_ids, attention_mask=decoder_mask(self.windows, buffer_mask, slots, dtype),
                            position_ids=position_ids, cache=cache, use_cache=True)
        keys, values = _stacked(cache)
        return output.logits[:, -1], keys, values


class DecoderOnlyStep(torch.nn.Module):
    """(input_ids [B,1], position_ids [B,1], cache_position [1], attention_mask [B,max_length], past_keys,
    past_values) -> (logits [B,V], past_keys, past_values) with the token's key/value written at cache_position."""

    def __init__(self, model: torch.nn.Module, max_length: int) -> None:
        super().__init__()
        self.model = model
        self.windows = layer_windows(model)
        self.max_length = max_length

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, cache_position: torch.Tensor,
                attention_mask: torch.Tensor, past_keys: torch.Tensor, past_values: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dtype = _model_dtype(self.model)
        cache = static_cache(self.max_length, past_keys, past_values, cache_position)
        mask = decoder_mask(self.windows, attention_mask, cache_position, dtype)
        output = self.model(input_ids=input_ids, attention_mask=mask,
                            position_ids=position_ids, cache=cache, use_cache=True)
        keys, values = _stacked(cache)
        return output.logits[:, -1], keys, values


class DecoderOnlyFull(torch.nn.Module):
    """The uncached reference: (input_ids [B,max_length], attention_mask [B,max_length], cache_position [1]) ->
    (logits [B,V] at cache_position), the whole buffer recomputed."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.windows = layer_windows(model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache_position: torch.Tensor
                ) -> tuple[torch.Tensor]:
        dtype = _model_dtype(self.model)
        slots = torch.arange(input_ids.shape[1], device=input_ids.device)
        position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        mask = decoder_mask(self.windows, attention_mask, slots, dtype)
        output = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False)
        return (output.logits.index_select(1, cache_position)[:, 0],)


def _encoder_output(hidden: torch.Tensor) -> Any:
    """The encoder's states as the model's `encoder_outputs` (a BaseModelOutput: T5Gemma reads `last_hidden_state`)."""
    from transformers.modeling_outputs import BaseModelOutput

    return BaseModelOutput(last_hidden_state=hidden)


class EncoderWithCross(torch.nn.Module):
    """(input_ids [B,S], attention_mask [B,S]) -> (encoder_hidden_states [B,S,d], cross_keys, cross_values
    [L,B,H,S,D]): the cross-attention keys/values come from one decoder call on a dummy token with an empty
    EncoderDecoderCache (the decoder's own projections fill its cross-attention cache)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from transformers import DynamicCache, EncoderDecoderCache

        dtype = _model_dtype(self.model)
        model = cast(Any, self.model)
        encoder_mask = _key_mask(attention_mask, dtype)
        hidden = model.get_encoder()(input_ids=input_ids, attention_mask=_encoder_mask(model, attention_mask, dtype))[0]
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        dummy = torch.zeros((input_ids.shape[0], 1), dtype=torch.long, device=input_ids.device)
        self_mask = torch.zeros((input_ids.shape[0], 1, 1, 1), dtype=dtype, device=input_ids.device)
        model.get_decoder()(input_ids=dummy, attention_mask=self_mask, encoder_hidden_states=hidden,
                            encoder_attention_mask=encoder_mask, cache=cache, use_cache=True)
        cross: Any = cache.cross_attention_cache
        return (hidden, torch.stack([layer.keys for layer in cross.layers]),
                torch.stack([layer.values for layer in cross.layers]))


class EncoderDecoderStep(torch.nn.Module):
    """(decoder_input_ids [B,1], cache_position [1], decoder_attention_mask [B,max_length], past_keys, past_values
    [L,B,H,max_length,D], cross_keys, cross_values [L,B,H,S,D], encoder_hidden_states [B,S,d], attention_mask [B,S])
    -> (logits [B,V], past_keys, past_values). The decoder's positions come from the cache's length, which the
    StaticCache holds as cache_position."""

    def __init__(self, model: torch.nn.Module, max_length: int) -> None:
        super().__init__()
        self.model = model
        self.max_length = max_length
        self.windows = layer_windows(model)

    def forward(self, decoder_input_ids: torch.Tensor, cache_position: torch.Tensor,
                decoder_attention_mask: torch.Tensor, past_keys: torch.Tensor, past_values: torch.Tensor,
                cross_keys: torch.Tensor, cross_values: torch.Tensor, encoder_hidden_states: torch.Tensor,
                attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from transformers import DynamicCache, EncoderDecoderCache

        dtype = _model_dtype(self.model)
        self_cache = static_cache(self.max_length, past_keys, past_values, cache_position)
        cross_cache = DynamicCache([(cross_keys[i], cross_values[i]) for i in range(cross_keys.shape[0])])
        cache = EncoderDecoderCache(self_cache, cross_cache)
        output = self.model(
            encoder_outputs=_encoder_output(encoder_hidden_states), attention_mask=_key_mask(attention_mask, dtype),
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_mask(self.windows, decoder_attention_mask, cache_position, dtype),
            cache=cache, use_cache=True,
        )
        keys, values = _stacked(self_cache)
        return output.logits[:, -1], keys, values


class EncoderDecoderFull(torch.nn.Module):
    """The uncached reference: (decoder_input_ids [B,max_length], encoder_hidden_states, attention_mask [B,S],
    cache_position [1]) -> (logits [B,V] at cache_position), the right-padded buffer recomputed (causal)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.windows = layer_windows(model)

    def forward(self, decoder_input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor,
                attention_mask: torch.Tensor, cache_position: torch.Tensor) -> tuple[torch.Tensor]:
        dtype = _model_dtype(self.model)
        slots = torch.arange(decoder_input_ids.shape[1], device=decoder_input_ids.device)
        ones = torch.ones_like(decoder_input_ids)
        output = self.model(
            encoder_outputs=_encoder_output(encoder_hidden_states), attention_mask=_key_mask(attention_mask, dtype),
            decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_mask(self.windows, ones, slots, dtype),
            use_cache=False,
        )
        return (output.logits.index_select(1, cache_position)[:, 0],)


# ---------------------------------------------------------------------------------------------------------------
# The interface.


def generation_rules(model: torch.nn.Module, kind: str) -> dict[str, Any]:
    """The ids and rules of greedy generation, read from the model's generation_config (then its config)."""
    pick = generation_picker(model)
    suppress, unapplied = suppressed_ids(model, pick, UNAPPLIED_DEFAULTS)
    eos = token_id_list(pick("eos_token_id"))
    pad = pick("pad_token_id")
    start = None
    if kind == "encoder-decoder":
        start = pick("decoder_start_token_id")
        if start is None:
            start = pick("bos_token_id")
        if start is None:
            raise ValueError("the model has no decoder_start_token_id (nor bos_token_id) to start decoding with")
    return {
        "decoder_start_token_id": None if start is None else int(start),
        "eos_token_ids": eos,
        "pad_token_id": int(pad) if pad is not None else (eos[0] if eos else 0),
        "pad_token_id_from_config": pad is not None,
        "forced_bos_token_id": pick("forced_bos_token_id"),
        "forced_eos_token_id": pick("forced_eos_token_id"),
        "suppress_token_ids": sorted(set(suppress)),
        "begin_suppress_token_ids": token_id_list(pick("begin_suppress_tokens")),
        "min_length": int(pick("min_length") or 0),
        "min_new_tokens": int(pick("min_new_tokens") or 0),
        "unapplied_settings": unapplied,
    }


def _tensor(name: str, shape: Sequence[str | int], dtype: str, note: str = "") -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "shape": list(shape), "dtype": dtype}
    if note:
        entry["note"] = note
    return entry


KV = ["layers", "batch", "heads", "max_length", "head_dim"]
CROSS = ["layers", "batch", "heads", "source_length", "head_dim"]

DECODER_ONLY_LOOP = [
    "prompts are LEFT-padded with pad_token_id to P = the longest prompt; attention_mask [B, max_length] int64 is 1 "
    "on real prompt tokens (slots 0..P-1), 0 on padding and on slots not yet written",
    "logits, past_keys, past_values = prefill(input_ids [B,P], attention_mask[:, :P])",
    "cur_len = P; finished = [False] * B; for i in 0 .. max_new_tokens - 1:",
    "  apply the logits rules (below) at cur_len; token = argmax(logits, -1) (first maximum); token[finished] = "
    "pad_token_id; emit token; finished |= token in eos_token_ids; cur_len += 1",
    "  stop when every row is finished or i == max_new_tokens - 1; else slot = P + i: attention_mask[:, slot] = 1; "
    "position_ids[b] = (real prompt tokens of row b) + i; logits, past_keys, past_values = step(token[:, None], "
    "position_ids[:, None], [slot], attention_mask, past_keys, past_values)",
    "the buffer must hold P + max_new_tokens - 1 <= max_length slots",
]
ENCODER_DECODER_LOOP = [
    "encoder_hidden_states, cross_keys, cross_values = encoder(input_ids [B,S], attention_mask [B,S]) (right- or "
    "left-padded sources both work: the mask hides padding)",
    "past_keys = past_values = zeros [L,B,H,max_length,D] float32; decoder_attention_mask = zeros [B,max_length] "
    "int64; token = [decoder_start_token_id] * B; cur_len = 1; finished = [False] * B",
    "for t in 0 .. max_new_tokens - 1: decoder_attention_mask[:, t] = 1; logits, past_keys, past_values = "
    "step(token[:, None], [t], decoder_attention_mask, past_keys, past_values, cross_keys, cross_values, "
    "encoder_hidden_states, attention_mask)",
    "  apply the logits rules (below) at cur_len; token = argmax(logits, -1); token[finished] = pad_token_id; "
    "emit token; finished |= token in eos_token_ids; cur_len += 1; stop when every row is finished",
    "the buffer must hold max_new_tokens <= max_length slots",
]
LOGITS_RULES = [
    "prompt_length = P (decoder-only, padding included) or 1 (encoder-decoder: the start token); max_total = "
    "prompt_length + max_new_tokens; cur_len = tokens so far (prompt_length + emitted)",
    "in generate()'s order: suppress_token_ids (bad words of one token included) -> -inf at every step; if cur_len "
    "< min_length or cur_len - prompt_length < min_new_tokens: eos_token_ids -> -inf",
    "if forced_bos_token_id is not null and cur_len == 1: every logit -inf but forced_bos_token_id (0); if "
    "forced_eos_token_id is not null and cur_len == max_total - 1: every logit -inf but forced_eos_token_id",
    "begin_suppress_token_ids -> -inf when cur_len == begin_index, begin_index = prompt_length, plus 1 when "
    "prompt_length == 1 and forced_bos_token_id is not null",
    "a finished row emits pad_token_id; the output rows have equal length, as generate()'s sequences do (after the "
    "prompt, after the start token)",
]


def interface(kind: str, max_length: int, rules: dict[str, Any], shapes: dict[str, Any],
              drift_limit: float) -> dict[str, Any]:
    """The description recorded in record.json and in each .pt as tsexport/generation.json; `drift_tolerance` is
    the request's drift limit."""
    f32, i64 = "float32", "int64"
    if kind == "decoder-only":
        artifacts = {
            "prefill": {
                "file": PREFILL_FILE,
                "inputs": [_tensor("input_ids", ["batch", "prompt_length"], i64, "left-padded"),
                           _tensor("attention_mask", ["batch", "prompt_length"], i64, "0 on padding")],
                "outputs": [_tensor("logits", ["batch", "vocab"], f32, "for the token after the prompt"),
                            _tensor("past_keys", KV, f32, "prompt in slots 0..prompt_length-1, zeros after"),
                            _tensor("past_values", KV, f32)],
            },
            "step": {
                "file": STEP_FILE,
                "inputs": [_tensor("input_ids", ["batch", 1], i64, "the last emitted token"),
                           _tensor("position_ids", ["batch", 1], i64, "the row's count of real tokens before it"),
                           _tensor("cache_position", [1], i64, "the buffer slot it is written to"),
                           _tensor("attention_mask", ["batch", "max_length"], i64,
                                   "1 on every filled slot, cache_position included"),
                           _tensor("past_keys", KV, f32), _tensor("past_values", KV, f32)],
                "outputs": [_tensor("logits", ["batch", "vocab"], f32),
                            _tensor("past_keys", KV, f32, "the input buffer with cache_position written"),
                            _tensor("past_values", KV, f32)],
            },
            "full": {
                "file": FULL_FILE, "role": "reference (uncached; drift checks and speed baseline)",
                "inputs": [_tensor("input_ids", ["batch", "max_length"], i64, "prompt left-padded, then the "
                                   "emitted tokens, then anything (masked)"),
                           _tensor("attention_mask", ["batch", "max_length"], i64, "as the step's"),
                           _tensor("cache_position", [1], i64, "the slot whose next-token logits are returned")],
                "outputs": [_tensor("logits", ["batch", "vocab"], f32)],
            },
        }
        connections = [
            {"from": "prefill.output.past_keys", "to": "step.input.past_keys"},
            {"from": "prefill.output.past_values", "to": "step.input.past_values"},
            {"from": "step.output.past_keys", "to": "step.input.past_keys"},
            {"from": "step.output.past_values", "to": "step.input.past_values"},
        ]
        loop = DECODER_ONLY_LOOP
        padding = "left"
    else:
        artifacts = {
            "encoder": {
                "file": ENCODER_FILE,
                "inputs": [_tensor("input_ids", ["batch", "source_length"], i64),
                           _tensor("attention_mask", ["batch", "source_length"], i64, "0 on padding")],
                "outputs": [_tensor("encoder_hidden_states", ["batch", "source_length", "d_model"], f32),
                            _tensor("cross_keys", CROSS, f32), _tensor("cross_values", CROSS, f32)],
            },
            "step": {
                "file": STEP_FILE,
                "inputs": [_tensor("decoder_input_ids", ["batch", 1], i64, "the last token (start token first)"),
                           _tensor("cache_position", [1], i64, "its decoder position and buffer slot"),
                           _tensor("decoder_attention_mask", ["batch", "max_length"], i64,
                                   "1 on slots 0..cache_position"),
                           _tensor("past_keys", KV, f32), _tensor("past_values", KV, f32),
                           _tensor("cross_keys", CROSS, f32), _tensor("cross_values", CROSS, f32),
                           _tensor("encoder_hidden_states", ["batch", "source_length", "d_model"], f32),
                           _tensor("attention_mask", ["batch", "source_length"], i64, "the encoder's")],
                "outputs": [_tensor("logits", ["batch", "vocab"], f32),
                            _tensor("past_keys", KV, f32, "the input buffer with cache_position written"),
                            _tensor("past_values", KV, f32)],
            },
            "full": {
                "file": FULL_FILE, "role": "reference (uncached; drift checks and speed baseline)",
                "inputs": [_tensor("decoder_input_ids", ["batch", "max_length"], i64,
                                   "start token, emitted tokens, then anything (causal)"),
                           _tensor("encoder_hidden_states", ["batch", "source_length", "d_model"], f32),
                           _tensor("attention_mask", ["batch", "source_length"], i64),
                           _tensor("cache_position", [1], i64, "the slot whose next-token logits are returned")],
                "outputs": [_tensor("logits", ["batch", "vocab"], f32)],
            },
        }
        connections = [
            {"from": "encoder.output.encoder_hidden_states", "to": "step.input.encoder_hidden_states"},
            {"from": "encoder.output.cross_keys", "to": "step.input.cross_keys"},
            {"from": "encoder.output.cross_values", "to": "step.input.cross_values"},
            {"from": "encoder.input.attention_mask", "to": "step.input.attention_mask"},
            {"from": "step.output.past_keys", "to": "step.input.past_keys"},
            {"from": "step.output.past_values", "to": "step.input.past_values"},
        ]
        loop = ENCODER_DECODER_LOOP
        padding = "any (encoder attention_mask)"
    return {
        "interface_version": INTERFACE_VERSION,
        "kind": kind,
        "strategy": "greedy",
        "cache": "static",
        "max_length": max_length,
        "prompt_padding": padding,
        **shapes,
        **rules,
        "artifacts": artifacts,
        "files": [entry["file"] for entry in artifacts.values()],
        "connections": connections,
        "loop": loop,
        "logits_rules": LOGITS_RULES,
        "drift_tolerance": drift_limit,
    }


# ---------------------------------------------------------------------------------------------------------------
# Tracing.


def _jit_trace(module: torch.nn.Module, example: tuple[torch.Tensor, ...]
               ) -> tuple[torch.jit.ScriptModule, list[str]]:
    """torch.jit.trace, and the TracerWarnings it gave ("file:line: message", deduplicated)."""
    import warnings

    tracer_warning = cast("type[Warning]", torch.jit.TracerWarning)  # type: ignore[attr-defined]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", tracer_warning)
        traced: Any = torch.jit.trace(module, example, check_trace=False)  # type: ignore[no-untyped-call]
    found: list[str] = []
    for w in caught:
        if issubclass(w.category, tracer_warning):
            line = f"{os.path.basename(w.filename)}:{w.lineno}: {str(w.message).split('. ')[0]}"
            if line not in found:
                found.append(line)
    return cast(torch.jit.ScriptModule, traced), found




def _example(example_prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, P] ids (or [P]) with a mask whose last row is left-padded by a third, so padding is in the trace."""
    ids = example_prompt.reshape(-1, example_prompt.shape[-1]).to(torch.long)
    mask = torch.ones_like(ids)
    if ids.shape[0] > 1 and ids.shape[1] > 2:
        mask[-1, : ids.shape[1] // 3] = 0
    return ids, mask


def trace_cached(model: torch.nn.Module, kind: str, max_length: int, example_prompt: torch.Tensor,
                 out_dir: str, drift_limit: float) -> dict[str, Any]:
    """Trace the cached artifacts of `model` at a fixed cache length, write them into `out_dir` (each embedding
    the interface as tsexport/generation.json) and return the interface with the artifact file names. A traced
    module that differs from its eager module at its own example by more than `drift_limit` (the request's) is
    refused."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    config = cast(Any, model).config
    if bool(getattr(config, "is_encoder_decoder", False)) != (kind == "encoder-decoder"):
        raise ValueError(f"{type(model).__name__} is {'' if kind == 'decoder-only' else 'not '}an encoder-decoder "
                         f"model; kind {kind!r} does not fit it")
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if isinstance(limit, int) and max_length > limit:
        raise ValueError(f"max_length {max_length} exceeds the model's {limit} positions")
    model = model.eval()
    rules = generation_rules(model, kind)
    layers, heads, head_dim = _cache_shape(model)
    if kind == "decoder-only":
        from transformers import StaticCache

        cache_layers = len(StaticCache(config=config, max_cache_len=max_length).layers)
        if cache_layers != layers:
            raise ValueError(f"transformers' StaticCache has {cache_layers} layers for {type(model).__name__}, its "
                             f"config {layers}")
    windows = layer_windows(model)
    vocab = int(config.vocab_size)
    ids, mask = _example(example_prompt)
    batch, length = ids.shape
    if kind == "decoder-only" and length >= max_length:
        raise ValueError(f"the example prompt ({length} tokens) must be shorter than max_length {max_length}")
    dtype = _model_dtype(model)
    kv = torch.zeros((layers, batch, heads, max_length, head_dim), dtype=dtype)
    slot = torch.tensor([min(length, max_length - 1)], dtype=torch.long)
    buffer_mask = torch.zeros((batch, max_length), dtype=torch.long)
    buffer_mask[:, : int(slot) + 1] = 1
    modules: dict[str, tuple[torch.nn.Module, tuple[torch.Tensor, ...]]] = {}
    with torch.no_grad():
        if kind == "decoder-only":
            buffer_mask[:, :length] = mask
            prefill = DecoderOnlyPrefill(model, max_length)
            _, keys, values = prefill(ids, mask)
            position_ids = mask.sum(-1, keepdim=True)
            token = ids[:, -1:]
            modules["prefill"] = (prefill, (ids, mask))
            modules["step"] = (DecoderOnlyStep(model, max_length),
                               (token, position_ids, slot, buffer_mask, keys, values))
            full_ids = torch.full((batch, max_length), rules["pad_token_id"], dtype=torch.long)
            full_ids[:, :length] = ids
            modules["full"] = (DecoderOnlyFull(model), (full_ids, buffer_mask, slot))
        else:
            encoder = EncoderWithCross(model)
            hidden, cross_k, cross_v = encoder(ids, mask)
            start = torch.full((batch, 1), int(rules["decoder_start_token_id"]), dtype=torch.long)
            modules["encoder"] = (encoder, (ids, mask))
            modules["step"] = (EncoderDecoderStep(model, max_length),
                               (start, slot, buffer_mask, kv, kv, cross_k, cross_v, hidden, mask))
            full_ids = torch.full((batch, max_length), rules["pad_token_id"], dtype=torch.long)
            full_ids[:, 0] = int(rules["decoder_start_token_id"])
            modules["full"] = (EncoderDecoderFull(model), (full_ids, hidden, mask, slot))
        shapes: dict[str, Any] = {"layers": layers, "heads": heads, "head_dim": head_dim, "vocab_size": vocab,
                                  "sliding_windows": windows,
                  "cache_dtype": str(dtype).replace("torch.", "")}
        description = interface(kind, max_length, rules, shapes, drift_limit)
        os.makedirs(out_dir, exist_ok=True)
        traced_report: dict[str, Any] = {}
        extra = {GENERATION_NAME: json.dumps(description, sort_keys=True).encode()}
        for role, (module, example) in modules.items():
            eager = module(*example)
            traced, tracer_warnings = _jit_trace(module, example)
            got = traced(*example)
            error = max(float((a.double() - b.double()).abs().max()) for a, b in zip(got, eager, strict=True))
            if error > drift_limit:
                raise RuntimeError(f"the traced {role} differs from the eager model at its own example "
                                   f"(max abs error {error:.3g})")
            file = cast(dict[str, Any], description["artifacts"][role])["file"]
            torch.jit.save(traced, os.path.join(out_dir, file), _extra_files=extra)
            traced_report[role] = {
                "file": file, "max_abs_error_at_example": error, "tracer_warnings": tracer_warnings,
                "unexplained_tracer_warnings": [w for w in tracer_warnings
                                                if w.split(": ")[0] not in EXPLAINED_TRACER_WARNINGS],
            }
    with open(os.path.join(out_dir, "generation.json"), "w", encoding="utf-8") as handle:
        json.dump(description, handle, indent=1, sort_keys=True)
    return {**description, "traced": traced_report}
