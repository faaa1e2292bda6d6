"""`library: sentence-transformers`: the folder's own modules.json pipeline (Transformer → Pooling → Dense/Normalize,
as it lists them), built by the sentence-transformers library, as one module that takes the token tensors by keyword
and returns token_embeddings and sentence_embedding; and the check of the saved artifact against the library's
encode() on real text at every envelope point: the exporting process writes the tokens and encode()'s embeddings,
the verifying process runs the saved artifact on them and compares.
"""

from __future__ import annotations

import json
from typing import Any, cast

import torch

from ..errors import WorkerError, describe, traceback_tail
from ..protocol import ModelSpec
from .dtypes import MODEL_DTYPES

OUTPUTS = ("token_embeddings", "sentence_embedding")
# Real sentences of varied lengths; an envelope point [B, S] takes B of them (in turn), each cut to S tokens by the
# tokenizer's own truncation, which encode() applies too when max_seq_length is S.
SENTENCES = (
    "A man is eating food.",
    "The new movie is awesome, and everyone in the theatre laughed at the jokes for two hours.",
    "Sentence embeddings map whole sentences to dense vectors that can be compared with cosine similarity.",
    "How do I bake bread at home?",
    "The quarterly report shows that revenue grew in every region except the north, where shipping costs rose sharply.",
    "Two dogs play in the snow.",
    "Paris is the capital and most populous city of France, on the Seine river in the north of the country.",
    "Is it going to rain tomorrow?",
)


class PipelineOutput(dict[str, torch.Tensor]):
    """The pipeline's outputs by name (as the record names them); a traced module returns `to_tuple()`."""

    def to_tuple(self) -> tuple[torch.Tensor, ...]:
        return tuple(self.values())


class SentenceTransformerPipeline(torch.nn.Module):
    """The SentenceTransformer called with a features dict of the token tensors given (the ones its Transformer module
    passes to the model)."""

    def __init__(self, pipeline: torch.nn.Module) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.config = transformer_model(pipeline).config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> PipelineOutput:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        features = cast(dict[str, torch.Tensor], self.pipeline({k: v for k, v in given.items() if v is not None}))
        return PipelineOutput((name, features[name]) for name in OUTPUTS)


def transformer_model(pipeline: Any) -> torch.nn.Module:
    """The transformers model inside the pipeline's first (Transformer) module."""
    first = pipeline[0]
    model = getattr(first, "auto_model", None) or getattr(first, "model", None)
    if not isinstance(model, torch.nn.Module):
        raise WorkerError("load", "load_failed", f"the pipeline's first module ({type(first).__name__}) holds no "
                          "transformers model; library: sentence-transformers needs a Transformer module first",
                          field="spec.model.library")
    return model


def load_pipeline(spec: ModelSpec) -> tuple[torch.nn.Module, list[str]]:
    """The pipeline module (eval mode) and the module types modules.json lists."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise WorkerError("load", "missing_dependency", "library: sentence-transformers needs the "
                          f"sentence-transformers package in the Python runtime ({describe(exc)})",
                          field="spec.model.library") from exc
    if spec.config:
        raise WorkerError("load", "bad_config", "config overrides are not applied to a sentence-transformers "
                          "pipeline; remove spec.model.config", field="spec.model.config")
    model_kwargs: dict[str, Any] = {"attn_implementation": spec.attn_implementation,
                                    "dtype": MODEL_DTYPES[spec.dtype]}
    if not spec.allow_pickle:
        model_kwargs["use_safetensors"] = True
    torch.manual_seed(spec.seed)
    try:
        pipeline = SentenceTransformer(
            cast(str, spec.pretrained), device="cpu", revision=spec.revision,
            trust_remote_code=spec.trust_remote_code, model_kwargs=model_kwargs,
        )
    except Exception as exc:
        raise WorkerError("load", "load_failed", f"sentence-transformers could not load {spec.pretrained}: "
                          f"{describe(exc)}", field="spec.model.pretrained", detail=traceback_tail(exc)) from exc
    inner = transformer_model(pipeline)
    wanted = spec.class_name
    if not wanted.startswith("Auto") and type(inner).__name__ != wanted:
        raise WorkerError("load", "bad_config", f"the pipeline's Transformer module holds a "
                          f"{type(inner).__name__}, not the {wanted} spec.model.class names",
                          field="spec.model.class")
    module = SentenceTransformerPipeline(pipeline).eval()
    return module, [type(m).__name__ for m in pipeline]


def _real_text_inputs(tokenizer: Any, names: list[str], batch: int, length: int, offset: int
                      ) -> tuple[list[str], list[torch.Tensor]]:
    texts = [SENTENCES[(offset + i) % len(SENTENCES)] for i in range(batch)]
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    tensors = []
    for name in names:
        if name in encoded:
            tensors.append(encoded[name])
        elif name == "token_type_ids":
            tensors.append(torch.zeros_like(encoded["input_ids"]))
        else:
            raise WorkerError("verify", "bad_config", f"the encode() check feeds the tokenizer's tensors, and "
                              f"{name} is not one of them", field="spec.inputs.tensors")
    return texts, tensors


def encode_references(module: torch.nn.Module, names: list[str], points: list[tuple[str, dict[str, int], int, int]],
                      path: str) -> None:
    """At each point (case, sizes, batch, sequence): real sentences tokenized to the sequence (padded to it, cut by the
    tokenizer at it) and the library's encode() of them with max_seq_length at that sequence, written to `path` for
    the verifying process, which runs the saved model.pt on the same tokens (`compare_with_encode`)."""
    from safetensors.torch import save_file

    from ..bundle import canonical_safetensors, readable_as_others

    pipeline: Any = cast(SentenceTransformerPipeline, module).pipeline
    previous = pipeline.max_seq_length
    tensors: dict[str, torch.Tensor] = {}
    described: list[dict[str, Any]] = []
    try:
        specials = int(pipeline.tokenizer.num_special_tokens_to_add())
        for k, (case, sizes, batch, length) in enumerate(points):
            if length <= specials:
                described.append({"case": case, "sizes": sizes, "shape": [batch, length], "skipped":
                                  f"{length} token(s) hold no text beside the tokenizer's {specials} special tokens"})
                continue
            texts, given = _real_text_inputs(pipeline.tokenizer, names, batch, length, k)
            pipeline.max_seq_length = length
            with torch.no_grad():
                expected = pipeline.encode(texts, convert_to_tensor=True, batch_size=batch).float().cpu()
            for name, tensor in zip(names, given, strict=True):
                tensors[f"{case}/{name}"] = tensor.contiguous()
            tensors[f"{case}/sentence_embedding"] = expected.contiguous()
            described.append({"case": case, "sizes": sizes, "shape": [batch, length], "texts": texts})
    finally:
        pipeline.max_seq_length = previous
    save_file(tensors, path, metadata={"tsexport.encode_points": json.dumps(described, sort_keys=True),
                                       "tsexport.inputs": json.dumps(names)})
    canonical_safetensors(path)
    readable_as_others(path)


def compare_with_encode(artifact: Any, path: str, device: str, min_cosine: float) -> dict[str, Any]:
    """The saved artifact on the tokens `encode_references` wrote, against the encode() embeddings beside them: per
    point the smallest per-row cosine of sentence_embedding. Needs neither transformers nor sentence-transformers.
    The Swift side judges the points inside the verified envelope."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata() or {}
    described = json.loads(metadata.get("tsexport.encode_points", "[]"))
    names = json.loads(metadata.get("tsexport.inputs", "[]"))
    tensors = load_file(path)
    index = OUTPUTS.index("sentence_embedding")
    results: list[dict[str, Any]] = []
    for point in described:
        if "skipped" in point:
            results.append(point)
            continue
        case = point["case"]
        expected = tensors[f"{case}/sentence_embedding"]
        with torch.no_grad():
            got = artifact(*[tensors[f"{case}/{name}"].to(device) for name in names])[index].float().cpu()
        cosine = torch.nn.functional.cosine_similarity(got, expected, dim=-1)
        error = float((got - expected).abs().max())
        results.append({**point, "min_cosine": float(cosine.min()), "max_abs_error": error})
    return {"reference": "SentenceTransformer.encode", "artifact": "model.pt", "compared_in": "verify",
            "min_cosine_allowed": min_cosine, "points": results}
