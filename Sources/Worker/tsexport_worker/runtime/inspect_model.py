"""The `inspect` op: what `tsexport init` needs to know about a local pretrained folder, read from its config only.

No weights are loaded and no model is built: the config comes from `AutoConfig.from_pretrained`, the class is looked
up by name (an `AutoModel*` class is resolved to the concrete class the config selects), and the forward signature is
read from the class itself. The worker reports facts; `tsexport init` (Swift) decides what the manifest says.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from ..errors import WorkerError, describe, traceback_tail

STAGE = "load"
KEYS = ("source", "class", "task")
# The forward parameters init can give a tensor for, in the order the answer lists them when forward has them.
KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "decoder_input_ids", "pixel_values")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SAMPLE_TEXT = "Who was Jim Henson? Jim Henson was a puppeteer."
# Files that make a folder hold a tokenizer (transformers 5 builds an empty tokenizer from a bare config otherwise).
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
    "sentencepiece.bpe.model", "tokenizer.model", "source.spm",
)


def parse_inspect(body: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """`source` (an absolute folder), `class` and `task` (each a string or null); `bad_request` otherwise. The keys
    are checked to be exactly KEYS by the caller (`request_body`)."""
    source = body["source"]
    if not isinstance(source, str) or not os.path.isabs(source):
        raise WorkerError(
            None, "bad_request", "inspect needs `source`, a pretrained folder's absolute path", field="source"
        )
    for key in ("class", "task"):
        value = body[key]
        if value is not None and not isinstance(value, str):
            raise WorkerError(None, "bad_request", f"`{key}` must be str or null, not {value!r}", field=key)
    return source, body["class"], body["task"]


def _config_int(config: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _weights(source: str) -> dict[str, Any]:
    names = sorted(os.listdir(source))
    safetensors = any(n.endswith(".safetensors") or n.endswith(".safetensors.index.json") for n in names)
    return {"safetensors": safetensors, "pickle": [n for n in names if n.endswith(PICKLE_SUFFIXES)]}


def _tokenizer(source: str) -> dict[str, Any]:
    """Whether the folder holds a tokenizer AutoTokenizer can load, its pad and mask tokens, and how many tokens the
    sample sentence becomes with the tokenizer's special tokens."""
    from .probe import import_transformers

    transformers = import_transformers()
    found = [n for n in TOKENIZER_FILES if os.path.isfile(os.path.join(source, n))]
    if not found:
        return {"present": False, "reason": f"none of {', '.join(TOKENIZER_FILES)} is in the folder",
                "pad_token": False, "mask_token": False, "sample_text": SAMPLE_TEXT, "sample_tokens": None}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - no tokenizer files, or ones that cannot be read: both mean "none"
        return {"present": False, "reason": describe(exc), "pad_token": False, "mask_token": False,
                "sample_text": SAMPLE_TEXT, "sample_tokens": None}
    try:
        count: int | None = len(tokenizer(SAMPLE_TEXT)["input_ids"])
    except Exception:  # noqa: BLE001 - a tokenizer that cannot encode the sample counts no tokens
        count = None
    if not count or len(tokenizer) == 0:
        return {"present": False, "reason": "the tokenizer is empty", "pad_token": False, "mask_token": False,
                "sample_text": SAMPLE_TEXT, "sample_tokens": None}
    return {
        "present": True, "reason": None, "class": type(tokenizer).__name__,
        "pad_token": tokenizer.pad_token_id is not None, "mask_token": tokenizer.mask_token_id is not None,
        "sample_text": SAMPLE_TEXT, "sample_tokens": count,
    }


def inspect_folder(source: str, class_name: str | None, task: str | None) -> dict[str, Any]:
    """The facts about `source`: config, class, forward inputs, sizes, tokenizer and weights."""
    from .load import resolve_class  # imports torch: only once the runtime is known to have it
    from .probe import import_transformers

    transformers = import_transformers()
    if not os.path.isdir(source):
        raise WorkerError(STAGE, "load_failed", f"{source} is not a folder", field="source")
    try:
        config = transformers.AutoConfig.from_pretrained(source)
    except Exception as exc:
        raise WorkerError(
            STAGE, "load_failed", f"could not load the config of {source}: {describe(exc)}",
            field="source", detail=traceback_tail(exc),
        ) from exc
    architectures = [a for a in (getattr(config, "architectures", None) or []) if isinstance(a, str)]
    chosen = class_name or (architectures[0] if architectures else "AutoModel")
    # The Swift side sends a task's Auto class as `class` with the task beside it: the task is why.
    origin = "task" if task else ("class" if class_name else ("architectures" if architectures else "default"))
    cls, is_auto = resolve_class(chosen)
    resolved: type = cls
    if is_auto:
        # The class an Auto class maps a config to: transformers resolves it with this private helper only.
        from transformers.models.auto.auto_factory import _get_model_class  # noqa: PLC2701 - see above

        try:
            resolved = _get_model_class(config, cls._model_mapping)  # type: ignore[attr-defined,no-untyped-call]
        except Exception as exc:  # KeyError/ValueError: the Auto class has no model for this config
            what = f" (task {task})" if task else ""
            raise WorkerError(
                STAGE, "unknown_class",
                f"{chosen}{what} has no model class for {type(config).__name__} (model_type "
                f"{getattr(config, 'model_type', None)!r}): {describe(exc)}",
                field="class", detail=traceback_tail(exc),
            ) from exc
    signature = inspect.signature(resolved.forward)  # type: ignore[attr-defined]
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    parameters = [n for n, p in signature.parameters.items() if p.kind in named and n != "self"]
    return {
        "source": source,
        "class": chosen,
        "class_origin": origin,
        "task": task,
        "is_auto": is_auto,
        "resolved_class": resolved.__name__,
        "model_type": getattr(config, "model_type", None),
        "architectures": architectures,
        "is_encoder_decoder": bool(getattr(config, "is_encoder_decoder", False)),
        "inputs": [n for n in parameters if n in KNOWN_INPUTS],
        "forward_parameters": parameters,
        "max_position_embeddings": _config_int(config, "max_position_embeddings", "n_positions"),
        "vocab_size": _config_int(config, "vocab_size"),
        "type_vocab_size": _config_int(config, "type_vocab_size"),
        "image_size": _config_int(config, "image_size"),
        "num_channels": _config_int(config, "num_channels"),
        "tokenizer": _tokenizer(source),
        "weights": _weights(source),
    }
