"""Dummy inputs: tokenise the text as the guide does, build every tensor, bind them by name, check their shapes.

Everything here runs before any tracing, so a manifest mistake (the guide's 13 segment ids for 14 tokens, a tensor
name `forward()` does not take) is reported against the manifest field, not as a tracer stack trace.
Imported only once the runtime is known to have torch.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any

import torch

from .errors import WorkerError, describe
from .protocol import InputsSpec, TensorSpec

STAGE = "inputs"
DIM_NAMES = ("batch size", "sequence length")


def torch_dtype(name: str) -> torch.dtype:
    return {
        "int64": torch.int64,
        "int32": torch.int32,
        "float32": torch.float32,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bool": torch.bool,
    }[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass
class TextTokens:
    """The tokenised text: ids (mask and padding applied) and the matching attention mask."""

    tokens: list[str]
    ids: list[int]
    attention: list[int]


@dataclass
class BuiltInputs:
    specs: list[TensorSpec]
    tensors: list[torch.Tensor]
    text: TextTokens | None

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]


# ---------------------------------------------------------------------------------------------------------------
# Binding by name


def forward_parameters(model: torch.nn.Module) -> list[str]:
    """The named parameters of `model.forward`, in order (no `self`, no *args/**kwargs)."""
    signature = inspect.signature(model.forward)
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [name for name, p in signature.parameters.items() if p.kind in named and name != "self"]


def bind(specs: list[TensorSpec], model: torch.nn.Module) -> None:
    """Every tensor must name a `forward()` parameter, once: `unknown_input` with a suggestion otherwise."""
    parameters = forward_parameters(model)
    seen: dict[str, int] = {}
    for spec in specs:
        if spec.name in seen:
            raise WorkerError(
                STAGE, "bad_request",
                f"input {spec.name!r} is given twice (tensors[{seen[spec.name]}] and tensors[{spec.index}])",
                field=f"{spec.path}.name",
            )
        seen[spec.name] = spec.index
        if spec.name not in parameters:
            close = difflib.get_close_matches(spec.name, parameters, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise WorkerError(
                STAGE, "unknown_input",
                f"{type(model).__name__}.forward() has no parameter {spec.name!r}{hint} "
                f"(it takes {', '.join(parameters)})",
                field=f"{spec.path}.name",
            )


# ---------------------------------------------------------------------------------------------------------------
# Text


def load_tokenizer(source: str | None, revision: str | None, trust_remote_code: bool) -> Any:
    if source is None:
        raise WorkerError(
            STAGE, "tokenizer_failed", "a tensor comes from text but no tokenizer is given",
            field="spec.inputs.tokenizer",
        )
    from .probe import import_transformers

    transformers = import_transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(
            source, revision=revision, trust_remote_code=trust_remote_code
        )
    except Exception as exc:  # noqa: BLE001 - every failure here is the tokenizer's
        raise WorkerError(
            STAGE, "tokenizer_failed", f"could not load a tokenizer from {source}: {describe(exc)}",
            field="spec.inputs.tokenizer",
        ) from exc


def tokenize(spec: InputsSpec, tokenizer: Any) -> TextTokens:
    """The guide's tokenisation (tokenize + convert_tokens_to_ids), then mask, then padding."""
    if spec.text is None:
        raise WorkerError(
            STAGE, "bad_request", "a tensor comes from text but no text is given", field="spec.inputs.text"
        )
    try:
        if spec.add_special_tokens:
            ids = list(tokenizer(spec.text)["input_ids"])
            tokens = list(tokenizer.convert_ids_to_tokens(ids))
        else:
            tokens = list(tokenizer.tokenize(spec.text))
            ids = list(tokenizer.convert_tokens_to_ids(tokens))
    except Exception as exc:  # noqa: BLE001
        raise WorkerError(
            STAGE, "tokenizer_failed", f"the tokenizer failed on the text: {describe(exc)}", field="spec.inputs.text"
        ) from exc
    for i, position in enumerate(spec.mask):
        if not 0 <= position < len(ids):
            raise WorkerError(
                STAGE, "shape_mismatch",
                f"mask position {position} is outside the text's {len(ids)} tokens (0 to {len(ids) - 1})",
                field=f"spec.inputs.mask[{i}]",
            )
        if tokenizer.mask_token_id is None:
            raise WorkerError(STAGE, "tokenizer_failed", "the tokenizer has no mask token", field="spec.inputs.mask")
        ids[position] = int(tokenizer.mask_token_id)
        tokens[position] = str(tokenizer.mask_token)
    attention = [1] * len(ids)
    if spec.pad_to is not None:
        if spec.pad_to < len(ids):
            raise WorkerError(
                STAGE, "shape_mismatch",
                f"pad_to is {spec.pad_to} but the text has {len(ids)} tokens; padding cannot shorten it",
                field="spec.inputs.pad_to",
            )
        if tokenizer.pad_token_id is None:
            raise WorkerError(
                STAGE, "tokenizer_failed", "pad_to needs a tokenizer with a pad token, and this one has none",
                field="spec.inputs.pad_to",
            )
        padding = spec.pad_to - len(ids)
        ids += [int(tokenizer.pad_token_id)] * padding
        tokens += [str(tokenizer.pad_token)] * padding
        attention += [0] * padding
    return TextTokens(tokens=tokens, ids=[int(i) for i in ids], attention=attention)


# ---------------------------------------------------------------------------------------------------------------
# Tensors


def _is_float(dtype_str: str) -> bool:
    return dtype_str in ("float32", "float16", "bfloat16")


def make_tensor(
    spec: TensorSpec,
    shape: list[int] | None,
    generator: torch.Generator,
    vocab_size: int | None,
    text: TextTokens | None,
) -> torch.Tensor:
    """One tensor as declared; `shape` overrides the declared shape (check shapes remake random/zeros/ones)."""
    dtype = torch_dtype(spec.dtype)
    if spec.source == "text":
        assert text is not None
        row = text.attention if spec.name.endswith("attention_mask") else text.ids
        return torch.tensor([row], dtype=dtype)
    if spec.source == "values":
        try:
            tensor = torch.tensor(spec.values, dtype=dtype)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise WorkerError(
                STAGE, "shape_mismatch", f"the values of {spec.name!r} do not form a tensor: {exc}",
                field=f"{spec.path}.values",
            ) from exc
        if spec.shape is not None and list(tensor.shape) != spec.shape:
            if tensor.dim() == 0:
                return torch.full(spec.shape, tensor.item(), dtype=dtype)
            raise WorkerError(
                STAGE, "shape_mismatch",
                f"the values of {spec.name!r} have shape {list(tensor.shape)} but its shape is given as {spec.shape}",
                field=f"{spec.path}.shape",
            )
        return tensor
    size = shape if shape is not None else spec.shape
    assert size is not None
    if spec.source == "zeros":
        return torch.zeros(size, dtype=dtype)
    if spec.source == "ones":
        return torch.ones(size, dtype=dtype)
    # random
    if spec.dtype == "bool":
        return torch.randint(0, 2, size, generator=generator).to(torch.bool)
    if _is_float(spec.dtype):
        if spec.low is None and spec.high is None:
            return torch.randn(size, generator=generator).to(dtype)
        low = float(spec.low if spec.low is not None else 0.0)
        high = float(spec.high if spec.high is not None else 1.0)
        return (torch.rand(size, generator=generator) * (high - low) + low).to(dtype)
    low_i = int(spec.low if spec.low is not None else 0)
    high_i = spec.high if spec.high is not None else vocab_size
    if high_i is None:
        raise WorkerError(
            STAGE, "bad_request",
            f"random integers for {spec.name!r} need `high`: the model's config has no vocab_size to default to",
            field=f"{spec.path}.high",
        )
    if int(high_i) <= low_i:
        raise WorkerError(
            STAGE, "bad_request", f"random integers for {spec.name!r} need low < high (got {low_i}, {int(high_i)})",
            field=f"{spec.path}.high",
        )
    return torch.randint(low_i, int(high_i), size, generator=generator, dtype=dtype)


def _shape_field(spec: TensorSpec) -> str:
    if spec.source == "values":
        return f"{spec.path}.values"
    if spec.source == "text":
        return "spec.inputs.text"
    return f"{spec.path}.shape"


AXIS_WORDS = {"batch": "batch size", "sequence": "sequence length", "decoder_sequence": "decoder sequence length"}


def check_agreement(specs: list[TensorSpec], tensors: list[torch.Tensor]) -> None:
    """Dimensions that share an axis name (the request's `axes`; without them only dimension 0, batch) agree in size.

    The yardstick is a text-derived tensor when there is one (the text is what the user means), else the first.
    """
    having: dict[str, list[tuple[TensorSpec, torch.Tensor, int]]] = {}
    for spec, tensor in zip(specs, tensors, strict=True):
        axes = spec.axes if spec.axes is not None else ["batch"]
        for dim, axis in enumerate(axes):
            if axis is not None and dim < tensor.dim():
                having.setdefault(axis, []).append((spec, tensor, dim))
    for axis, entries in having.items():
        ref_spec, ref_tensor, ref_dim = next(((s, t, d) for s, t, d in entries if s.source == "text"), entries[0])
        for spec, tensor, dim in entries:
            if tensor.shape[dim] != ref_tensor.shape[ref_dim]:
                origin = " (from the text)" if ref_spec.source == "text" else ""
                words = AXIS_WORDS.get(axis, f"{axis} size")
                raise WorkerError(
                    STAGE, "shape_mismatch",
                    f"{spec.name} has {words} {tensor.shape[dim]} but {ref_spec.name}{origin} has "
                    f"{ref_tensor.shape[ref_dim]} ({tensor.shape[dim]} vs {ref_tensor.shape[ref_dim]}); dimensions "
                    f"that share the axis {axis!r} must agree",
                    field=_shape_field(spec),
                )


def build(spec: InputsSpec, model: torch.nn.Module, seed: int, trust_remote_code: bool) -> BuiltInputs:
    """Bind, tokenise, build and check every input of the job, in manifest order (the tokenizer at the job's
    `tokenizer_revision`, as given)."""
    bind(spec.tensors, model)
    text = None
    if any(t.source == "text" for t in spec.tensors):
        tokenizer = load_tokenizer(spec.tokenizer, spec.tokenizer_revision, trust_remote_code)
        text = tokenize(spec, tokenizer)
    generator = torch.Generator().manual_seed(seed)
    vocab_size = config_vocab_size(getattr(model, "config", None))
    tensors = [make_tensor(t, None, generator, vocab_size, text) for t in spec.tensors]
    check_agreement(spec.tensors, tensors)
    return BuiltInputs(specs=list(spec.tensors), tensors=tensors, text=text)


def config_vocab_size(config: Any) -> int | None:
    """The vocabulary of input_ids: the config's vocab_size, else its text_config's (CLIP, SigLIP and other
    multimodal configs nest it)."""
    size = getattr(config, "vocab_size", None)
    if size is None:
        size = getattr(getattr(config, "text_config", None), "vocab_size", None)
    return int(size) if isinstance(size, int) else None


def remake(built: BuiltInputs, shape: list[int], seed: int, vocab_size: int | None) -> list[torch.Tensor]:
    """The inputs at a check shape [batch, sequence], as the contract says.

    random/zeros/ones are remade as declared at the new shape; text and values tensors are filled with values drawn
    (seeded) from those they hold at the traced shape, so ids stay in the vocabulary and masks stay masks.
    """
    generator = torch.Generator().manual_seed(seed)
    remade = []
    for spec, tensor in zip(built.specs, built.tensors, strict=True):
        new_shape = list(tensor.shape)
        for dim, size in enumerate(shape[: len(new_shape)]):
            new_shape[dim] = size
        if spec.source in ("random", "zeros", "ones"):
            remade.append(make_tensor(spec, new_shape, generator, vocab_size, None))
            continue
        pool = tensor.reshape(-1)
        if pool.numel() == 0:
            remade.append(torch.zeros(new_shape, dtype=tensor.dtype))
            continue
        picks = torch.randint(0, pool.numel(), new_shape, generator=generator)
        remade.append(pool[picks])
    return remade
