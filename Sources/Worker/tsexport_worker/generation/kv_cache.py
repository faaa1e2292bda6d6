"""The key/value cache of the cached generation artifacts (cache_split.py): its shape from the config, the explicit
buffers as a transformers cache, and the ready 4D attention masks.

The buffer is [layers, batch, key_value_heads, max_length, head_dim]. Grouped-query and multi-query models (Llama,
Qwen2, Mistral, Gemma 2, Phi-3, and T5Gemma's decoder, whose sizes live in a nested decoder config) keep fewer
key/value heads than query heads, so the buffer is sized from
`num_key_value_heads` (the query heads when the config has none) and `head_dim` (hidden_size / num_attention_heads
when the config has none). Every layer keeps every slot; a sliding-window layer (Mistral's, Gemma 2's alternate
layers) sees only the keys within its window of the query's slot, which the mask says, as transformers'
sliding-window mask does over cache positions. Layers of one kind share one mask; a model whose layers differ gets
the masks by layer type ({"full_attention": ..., "sliding_attention": ...}), which those models' forward takes.
"""

from __future__ import annotations

from typing import Any, cast

import torch

SUPPORTED_LAYER_TYPES = ("full_attention", "sliding_attention")


def additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean [B, 1, Q, K] mask as the additive float mask transformers' attention takes (0 = attend). A fully
    masked row gets a uniform softmax, never NaN, so padding never poisons the cache."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    low = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, low)


def key_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, K] 0/1 key mask -> [B, 1, 1, K] additive (every query sees the same keys)."""
    return additive(mask[:, None, None, :] != 0, dtype)


def causal_mask(key_valid: torch.Tensor, query_slots: torch.Tensor, dtype: torch.dtype,
                window: int | None = None) -> torch.Tensor:
    """Queries at buffer slots `query_slots` [Q] attend keys at slots <= their own that `key_valid` [B, K] marks;
    with a `window`, only the keys at slots > query slot - window."""
    slots = torch.arange(key_valid.shape[1], device=key_valid.device)
    allowed = slots[None, :] <= query_slots[:, None]  # [Q, K]
    if window is not None:
        allowed = allowed & (slots[None, :] > query_slots[:, None] - window)
    return additive(allowed[None, None, :, :] & (key_valid[:, None, None, :] != 0), dtype)


def layer_windows(model: torch.nn.Module) -> list[int | None]:
    """Each decoder layer's sliding window (None: full attention), as transformers' cache reads the config."""
    from transformers.cache_utils import get_layer_types_and_kwargs

    config = cast(Any, model).config
    if getattr(config, "is_encoder_decoder", False):
        nested = sub_config(config, "decoder")
        if nested is None or not hasattr(nested, "layer_types"):
            return [None] * cache_shape(model)[0]
        config = nested
    else:
        config = config.get_text_config(decoder=True)
    types, kwargs = get_layer_types_and_kwargs(config)
    unsupported = sorted({t for t in types if t not in SUPPORTED_LAYER_TYPES})
    if unsupported:
        raise ValueError(f"{type(model).__name__} has {', '.join(unsupported)} layers; cached generation supports "
                         f"{' and '.join(SUPPORTED_LAYER_TYPES)} layers")
    return [int(kw["sliding_window"]) if t == "sliding_attention" else None
            for t, kw in zip(types, kwargs, strict=True)]


def sub_config(config: Any, part: str) -> Any:
    """An encoder-decoder model's nested `encoder` / `decoder` config (T5Gemma's), else None (Marian and BART state
    the decoder's sizes flat, as decoder_*)."""
    from transformers import PretrainedConfig

    nested = getattr(config, part, None)
    return nested if isinstance(nested, PretrainedConfig) else None


def encoder_mask(
    model: torch.nn.Module, mask: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The encoder's self-attention mask from the [B, S] 0/1 mask: the key mask, or for an encoder with
    bidirectional sliding-window layers (T5Gemma's) one mask per layer type, the sliding one keeping the keys within
    the window of each query on both sides (|query - key| <= sliding_window, as transformers' bidirectional
    sliding-window mask)."""
    config = sub_config(cast(Any, model).config, "encoder")
    types = set(getattr(config, "layer_types", None) or [])
    if "sliding_attention" not in types:
        return key_mask(mask, dtype)
    window = int(config.sliding_window)
    slots = torch.arange(mask.shape[1], device=mask.device)
    near = (slots[None, :] - slots[:, None]).abs() <= window  # [Q, K]
    keys = mask[:, None, None, :] != 0
    return {"full_attention": additive(keys.expand(-1, -1, mask.shape[1], -1), dtype),
            "sliding_attention": additive(near[None, None, :, :] & keys, dtype)}


def decoder_mask(windows: list[int | None], key_valid: torch.Tensor, query_slots: torch.Tensor,
                 dtype: torch.dtype) -> torch.Tensor | dict[str, torch.Tensor]:
    """The attention mask argument for the decoder: one mask when every layer has the same window, else one per
    layer type."""
    distinct = set(windows)
    if len(distinct) == 1:
        return causal_mask(key_valid, query_slots, dtype, windows[0])
    sliding = {w for w in distinct if w is not None}
    if len(sliding) != 1:
        raise ValueError(f"layers with different sliding windows ({sorted(sliding)}) are not supported")
    return {"full_attention": causal_mask(key_valid, query_slots, dtype),
            "sliding_attention": causal_mask(key_valid, query_slots, dtype, sliding.pop())}


def static_cache(max_length: int, keys: torch.Tensor, values: torch.Tensor, cache_position: torch.Tensor) -> Any:
    """A transformers cache of full-length StaticLayers over explicit buffers: layer l holds keys[l] / values[l]
    (cloned: the caller's tensors are never written) and writes the next key/value at `cache_position` [1]."""
    from transformers.cache_utils import Cache, StaticLayer

    layers: list[Any] = []
    for index in range(keys.shape[0]):
        layer = StaticLayer(max_cache_len=max_length)
        layer.keys = keys[index].clone()
        layer.values = values[index].clone()
        layer.device = keys.device
        layer.batch_size, layer.num_heads = keys.shape[1], keys.shape[2]
        layer.k_head_dim = layer.v_head_dim = keys.shape[4]
        layer.cumulative_length = cache_position.clone()
        layer.is_initialized = True
        layers.append(layer)
    return Cache(layers=layers)


def stacked(cache: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.stack([layer.keys for layer in cache.layers]),
            torch.stack([layer.values for layer in cache.layers]))


def cache_shape(model: torch.nn.Module) -> tuple[int, int, int]:
    """(layers, key/value heads, head_dim) of the decoder's self-attention cache."""
    # The flat encoder-decoder configs (Marian, BART) name the decoder's sizes decoder_*; transformers 5.24's
    # get_text_config(decoder=True) copy of them keeps decoder_* at the class defaults, so read the config itself.
    config = cast(Any, model).config
    if not getattr(config, "is_encoder_decoder", False):
        config = config.get_text_config(decoder=True)
    else:
        config = sub_config(config, "decoder") or config
    layers = getattr(config, "decoder_layers", None) or config.num_hidden_layers
    heads = getattr(config, "decoder_attention_heads", None) or config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    hidden = getattr(config, "d_model", None) or config.hidden_size
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return int(layers), int(kv_heads), int(head_dim)
