"""Remade token ids keep the structure of the traced ones.

At a check shape or an envelope point every tensor is remade at the new shape. Drawn at random from the traced
values, `input_ids` would lose what the model relies on: the special tokens at the ends ([CLS] … [SEP], <s> … </s>;
BART's classification head needs exactly one </s> per row, at its last real token). So a remade `input_ids`
(`decoder_input_ids`) made from text or values keeps the traced first row's first token first and its last real
token (the last one its mask keeps) last, draws the tokens between from the traced row's inner tokens (never the
end tokens), and holds the padding id wherever its mask (`attention_mask`, `decoder_attention_mask`) is 0.
"""

from __future__ import annotations

import torch

from .inputs import BuiltInputs

MASK_OF = {"input_ids": "attention_mask", "decoder_input_ids": "decoder_attention_mask"}


def keep_structure(built: BuiltInputs, remade: list[torch.Tensor], seed: int, pad_id: int | None) -> list[torch.Tensor]:
    """`remade` (in `built`'s order) with every text/values id tensor rebuilt as the module docstring says."""
    names = built.names
    out = list(remade)
    generator = torch.Generator().manual_seed(seed)
    for ids_name, mask_name in MASK_OF.items():
        if ids_name not in names:
            continue
        index = names.index(ids_name)
        traced = built.tensors[index]
        if built.specs[index].source not in ("text", "values") or traced.dim() != 2 or traced.shape[1] == 0:
            continue
        traced_mask = built.tensors[names.index(mask_name)] if mask_name in names else None
        new_mask = out[names.index(mask_name)] if mask_name in names else None
        row = traced[0]
        kept = (traced_mask[0] != 0) if traced_mask is not None else torch.ones_like(row, dtype=torch.bool)
        positions = kept.nonzero().flatten()
        if positions.numel() == 0:
            continue
        first, last = row[positions[0]], row[positions[-1]]
        inner = row[positions[1:-1]]
        inner = inner[(inner != first) & (inner != last)]
        if inner.numel() == 0:
            pool = traced.flatten()
            inner = pool[(pool != first) & (pool != last)]
        padding = row[~kept]
        pad = padding[0] if padding.numel() else (torch.tensor(pad_id, dtype=traced.dtype) if pad_id is not None else None)
        shape = out[index].shape
        ids = inner[torch.randint(0, inner.numel(), tuple(shape), generator=generator)] if inner.numel() else out[index].clone()
        for b in range(shape[0]):
            valid = (new_mask[b] != 0) if new_mask is not None and new_mask.shape == shape else torch.ones(shape[1], dtype=torch.bool)
            where = valid.nonzero().flatten()
            if where.numel() == 0:
                continue
            ids[b, where[0]] = first
            ids[b, where[-1]] = last
            if pad is not None:
                ids[b, ~valid] = pad
        out[index] = ids.to(traced.dtype)
    return out
