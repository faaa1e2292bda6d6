"""Encoder/decoder split: encoder.pt and decoder_step.pt beside model.pt, for generation outside Python.

The job's `trace.split` asks for it; the split check compares the traced parts with the eager model at the job's
`trace.tolerance`.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from ..bundle import DECODER_STEP_FILE, ENCODER_FILE, RECORD_NAME, sha256_file
from ..errors import WorkerError, describe, traceback_tail
from ..export import inputs
from ..export.trace import format_warning, optimize
from ..outputs import cpu_copy, signature
from ..protocol import Job, SplitSpec
from ..torchjit import TracerWarning
from ..torchjit import trace as jit_trace
from .generate_loop import generation_picker, suppressed_ids, token_id_list

ENCODER_INPUTS = ["input_ids", "attention_mask"]
ENCODER_OUTPUTS = ["encoder_hidden_states"]
DECODER_INPUTS = ["decoder_input_ids", "encoder_hidden_states", "attention_mask", "position"]
DECODER_OUTPUTS = ["next_token_logits"]
# Greedy-relevant generation settings the recorded loop does not apply, with their no-op values.
UNAPPLIED_DEFAULTS: dict[str, Any] = {
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0, "sequence_bias": None, "min_new_tokens": None,
    "exponential_decay_length_penalty": None, "guidance_scale": None, "remove_invalid_values": False,
}
LOOP = [
    "encoder_hidden_states = encoder(input_ids, attention_mask)[0]",
    "ids = a [batch, max_length] int64 tensor of pad_token_id; ids[:, 0] = decoder_start_token_id; "
    "finished = [False] * batch",
    "for t in 0 .. max_length - 2: logits = decoder_step(ids, encoder_hidden_states, attention_mask, "
    "full([batch], t))[0]",
    "  logits[:, suppress_token_ids] = -inf; if t == 0: logits[:, begin_suppress_token_ids] = -inf; "
    "if t + 1 < min_length: logits[:, eos_token_ids] = -inf",
    "  if t == 0 and forced_bos_token_id is not None: only forced_bos_token_id; if t + 2 == max_length and "
    "forced_eos_token_id is not None: only forced_eos_token_id",
    "  next = argmax(logits, -1); next[finished] = pad_token_id; ids[:, t + 1] = next; finished |= next in "
    "eos_token_ids; stop when every row is finished",
    "the tokens are ids[:, :t + 2]; a shorter max_length works the same (forced eos at that length), a longer one "
    "does not fit the trace",
]


class EncoderPart(torch.nn.Module):
    """The encoder alone: (input_ids, attention_mask) -> (encoder_hidden_states,)."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0],)


class DecoderStep(torch.nn.Module):
    """One decoding step without a cache: the whole right-padded prefix is recomputed, and the logits at `position`
    (the last real token of each row) are returned. Causal self-attention keeps the padding after `position` from
    changing them, so one trace at a fixed max_length serves every step."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        decoder_input_ids: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        position: torch.Tensor,
    ) -> tuple[torch.Tensor]:
        output = self.model(
            encoder_outputs=(encoder_hidden_states,), attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids, use_cache=False,
        )
        logits = output[0]
        index = position.reshape(-1, 1, 1).expand(-1, 1, logits.shape[-1])
        return (logits.gather(1, index).squeeze(1),)


@dataclass
class SplitArtifact:
    """One extra artifact of a split bundle: its traced module, cases, sample inputs and eager references."""

    role: str
    file: str
    input_names: list[str]
    output_names: list[str]
    module: torch.jit.ScriptModule | None = None
    cases: list[dict[str, Any]] = field(default_factory=list)
    samples: dict[str, torch.Tensor] = field(default_factory=dict)
    references: dict[str, torch.Tensor] = field(default_factory=dict)
    tracer_warnings: list[str] = field(default_factory=list)
    input_signature: list[dict[str, Any]] = field(default_factory=list)
    output_signature: list[dict[str, Any]] = field(default_factory=list)
    sha256: str = ""


@dataclass
class SplitResult:
    artifacts: list[SplitArtifact]
    generation: dict[str, Any]
    warnings: list[dict[str, Any]]


def generation_settings(model: torch.nn.Module, split: SplitSpec) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The token ids and rules of greedy generation, from the model's generation config, and warnings about
    settings the recorded loop does not apply."""
    pick = generation_picker(model)
    suppress, unapplied = suppressed_ids(model, pick, UNAPPLIED_DEFAULTS)
    start = pick("decoder_start_token_id")
    if start is None:
        start = pick("bos_token_id")
    settings = {
        "kind": split.kind,
        "strategy": "greedy",
        "max_length": split.max_length,
        "decoder_start_token_id": start,
        "eos_token_ids": token_id_list(pick("eos_token_id")),
        "pad_token_id": pick("pad_token_id"),
        "forced_bos_token_id": pick("forced_bos_token_id"),
        "forced_eos_token_id": pick("forced_eos_token_id"),
        "suppress_token_ids": sorted(set(suppress)),
        "begin_suppress_token_ids": token_id_list(pick("begin_suppress_tokens")),
        "min_length": int(pick("min_length") or 0),
        "unapplied_settings": unapplied,
    }
    warnings_out = []
    if unapplied:
        warnings_out.append({
            "code": "generation_settings_not_applied",
            "field": "spec.trace.split",
            "message": f"the model's generation config sets {', '.join(sorted(unapplied))}, which the recorded "
            "greedy loop does not apply: a loop outside Python must apply them itself to match generate()",
        })
    if settings["pad_token_id"] is None:
        settings["pad_token_id"] = settings["eos_token_ids"][0] if settings["eos_token_ids"] else 0
        warnings_out.append({
            "code": "no_pad_token",
            "field": "spec.model.config.pad_token_id",
            "message": f"the model has no pad token; the decoder buffer is padded with {settings['pad_token_id']} "
            "(padding after the current position does not change the step's logits)",
        })
    return settings, warnings_out


def check_split_model(model: torch.nn.Module, split: SplitSpec, names: list[str], hardware: str) -> None:
    """`bad_config` on spec.trace.split when the model or the inputs cannot be split into encoder + decoder step."""
    config = getattr(model, "config", None)
    cls = type(model).__name__
    if not getattr(config, "is_encoder_decoder", False) or not callable(getattr(model, "get_encoder", None)):
        raise WorkerError(
            "load", "bad_config",
            f"spec.trace.split: {split.kind} needs an encoder-decoder model, and {cls} is not one (decoder-only "
            "models such as GPT-2 need no split: model.pt traced at the longest length with an attention_mask is "
            "their step)",
            field="spec.trace.split",
        )
    try:
        head = model.get_output_embeddings()  # type: ignore[operator]
    except (AttributeError, NotImplementedError):
        head = None
    if head is None:
        raise WorkerError(
            "load", "bad_config",
            f"spec.trace.split: {split.kind} exports a decoder step that returns next-token logits, so it needs a "
            f"model with a language-model head: {cls} has none; use its ...ForConditionalGeneration or ...MTModel "
            "class (MarianMTModel, BartForConditionalGeneration, T5ForConditionalGeneration)",
            field="spec.model.class",
        )
    if "input_ids" not in names:
        raise WorkerError(
            "inputs", "bad_request",
            "spec.trace.split: the encoder is traced on the input_ids tensor, which is missing",
            field="spec.inputs.tensors",
        )
    if hardware in ("inf1", "inf2"):
        raise WorkerError(
            "load", "bad_config", f"spec.trace.split is not supported for hardware {hardware} (cpu and cuda only)",
            field="spec.trace.split",
        )
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and split.max_length > limit:
        raise WorkerError(
            "load", "bad_config",
            f"spec.trace.split.max_length is {split.max_length} but {cls} has only {limit} decoder positions "
            "(max_position_embeddings)",
            field="spec.trace.split.max_length",
        )


def _encoder_inputs(built: inputs.BuiltInputs, tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    named = dict(zip(built.names, tensors, strict=True))
    input_ids = named["input_ids"]
    mask = named.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(input_ids)
    return input_ids, mask.to(input_ids.device)


def _padded_mask(mask: torch.Tensor) -> torch.Tensor:
    """The mask with the last third of the last row's positions masked: a source with padding."""
    padded = mask.clone()
    length = padded.shape[1]
    if length > 1:
        padded[-1, length - max(1, length // 3):] = 0
    return padded


def _decoder_buffer(
    batch: int, split: SplitSpec, settings: dict[str, Any], vocab_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded decoder ids [batch, max_length] (start token, random tokens) and each row's position."""
    length = split.max_length
    ids = torch.full((batch, length), int(settings["pad_token_id"]), dtype=torch.int64)
    ids[:, 0] = int(settings["decoder_start_token_id"])
    positions = torch.randint(0, length, (batch,), generator=generator)
    if batch > 1:
        positions[0] = length - 1  # one row uses the whole buffer
    high = max(vocab_size, 2)
    for row in range(batch):
        p = int(positions[row])
        if p > 0:
            ids[row, 1 : p + 1] = torch.randint(min(3, high - 1), high, (p,), generator=generator)
    return ids, positions


def _eager_next_logits(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    decoder_ids: torch.Tensor,
    positions: torch.Tensor,
) -> torch.Tensor:
    """The full eager model on each row's unpadded prefix, row by row: what the padded step must agree with."""
    rows = []
    with torch.no_grad():
        for row in range(decoder_ids.shape[0]):
            p = int(positions[row])
            output = model(
                input_ids=input_ids[row : row + 1], attention_mask=mask[row : row + 1],
                decoder_input_ids=decoder_ids[row : row + 1, : p + 1], use_cache=False,
            )
            rows.append(output[0][:, p])
    return torch.cat(rows, 0)


def _trace_part(
    module: torch.nn.Module, example: list[torch.Tensor], strict: bool, refuse_warnings: bool, role: str, file: str
) -> tuple[torch.jit.ScriptModule, list[str]]:
    """torch.jit.trace of one split part (`strict` is torch.jit.trace's own flag), refused when the request says a
    part whose trace warned is refused."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TracerWarning)
        try:
            traced = jit_trace(module, tuple(example), strict)
        except Exception as exc:
            raise WorkerError(
                "trace", "trace_failed", f"tracing the {role} ({file}) failed: {describe(exc)}",
                field="spec.trace.split", detail=traceback_tail(exc),
            ) from exc
    found = [format_warning(w) for w in caught if issubclass(w.category, TracerWarning)]
    for w in caught:
        if not issubclass(w.category, TracerWarning):
            sys.stderr.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno))
    if refuse_warnings and found:
        raise WorkerError(
            "trace", "strict_violation",
            f"strict tracing refused the {role} ({file}): {len(found)} TracerWarning(s), the first: \"{found[0]}\"; "
            "set spec.trace.strict: false to keep such a trace and let check_shapes tell whether it generalises",
            field="spec.trace.strict",
        )
    return traced, found




def trace_split(
    model: torch.nn.Module, built: inputs.BuiltInputs, example: list[torch.Tensor], job: Job, split: SplitSpec,
    device: str,
) -> SplitResult:
    """Trace the encoder and one decoder step, and make their sample inputs and eager references: at the traced
    shape, with a padded source, and at every check shape [batch, source length] (the decoder buffer keeps
    max_length)."""
    settings, split_warnings = generation_settings(model, split)
    if settings["decoder_start_token_id"] is None:
        raise WorkerError(
            "load", "bad_config",
            "spec.trace.split: the model has no decoder_start_token_id (nor bos_token_id) to start decoding with; "
            "set spec.model.config.decoder_start_token_id",
            field="spec.model.config.decoder_start_token_id",
        )
    vocab_size = int(getattr(model.config, "vocab_size", 0) or 0)
    encoder = EncoderPart(model.get_encoder()).eval()  # type: ignore[operator]
    step = DecoderStep(model).eval()
    generator = torch.Generator().manual_seed(job.model.seed + 1000)

    # The encoder's and decoder step's cases: (name, input_ids, mask) at the traced shape, padded, check shapes.
    traced_ids, traced_mask = _encoder_inputs(built, example)
    sources = [("traced", traced_ids, traced_mask), ("padded", traced_ids, _padded_mask(traced_mask))]
    for k, shape in enumerate(job.trace.check_shapes):
        remade = inputs.remake(built, shape, job.model.seed + 1 + k, vocab_size or None)
        ids_k, mask_k = _encoder_inputs(built, remade)
        sources.append((f"check{k}", ids_k.to(device), mask_k.to(device)))

    parts = {
        "encoder": SplitArtifact("encoder", ENCODER_FILE, ENCODER_INPUTS, ENCODER_OUTPUTS),
        "decoder_step": SplitArtifact("decoder_step", DECODER_STEP_FILE, DECODER_INPUTS, DECODER_OUTPUTS),
    }
    examples: dict[str, list[torch.Tensor]] = {}
    padding_gaps: list[float] = []
    padding_scale = 0.0
    for case, input_ids, mask in sources:
        try:
            with torch.no_grad():
                hidden = encoder(input_ids, mask)[0]
            batch = input_ids.shape[0]
            decoder_ids, positions = _decoder_buffer(batch, split, settings, vocab_size, generator)
            decoder_ids, positions = decoder_ids.to(device), positions.to(device)
            with torch.no_grad():
                logits = step(decoder_ids, hidden, mask, positions)[0]
            prefix_logits = _eager_next_logits(model, input_ids, mask, decoder_ids, positions)
            padding_gaps.append(float((logits.double() - prefix_logits.double()).abs().max()))
            padding_scale = max(padding_scale, float(prefix_logits.double().abs().max()))
        except Exception as exc:
            if case == "traced":
                raise WorkerError(
                    "trace", "forward_failed",
                    f"spec.trace.split: the eager encoder or decoder failed on the dummy inputs: {describe(exc)}",
                    field="spec.trace.split", detail=traceback_tail(exc),
                ) from exc
            error = f"the eager model failed at shape {list(input_ids.shape)}: {describe(exc)}"
            for role in parts:
                parts[role].cases.append({"case": f"{role}.{case}", "shape": list(input_ids.shape[:2]), "error": error})
            continue
        values = {
            "encoder": ([input_ids, mask], [hidden]),
            "decoder_step": ([decoder_ids, hidden, mask, positions], [logits]),
        }
        for role, (args, outs) in values.items():
            part = parts[role]
            name = f"{role}.{case}"
            part.cases.append({"case": name, "shape": list(input_ids.shape[:2])})
            for input_name, tensor in zip(part.input_names, args, strict=True):
                part.samples[f"{name}/{input_name}"] = cpu_copy(tensor)
            for i, tensor in enumerate(outs):
                part.references[f"{name}/output_{i}"] = cpu_copy(tensor)
            if case == "traced":
                examples[role] = args
                part.input_signature = signature(list(zip(part.input_names, args, strict=True)))
                part.output_signature = signature(list(zip(part.output_names, outs, strict=True)))

    # The fixed-length buffer is faithful only when padding after `position` cannot change the logits (causal
    # self-attention): the padded step is compared with the full model on each unpadded prefix. Reassociation in
    # longer matmuls gives small differences, a decoder that looks ahead gives large ones.
    atol, rtol = job.trace.tolerance.atol, job.trace.tolerance.rtol
    padding_gap = max(padding_gaps) if padding_gaps else 0.0
    padding_bound = split.padding_absolute + split.padding_relative * padding_scale
    if padding_gap > padding_bound:
        raise WorkerError(
            "trace", "trace_failed",
            f"spec.trace.split: padding the decoder buffer changes {type(model).__name__}'s next-token logits (max "
            f"abs difference {padding_gap:.3g} from the unpadded prefix): its decoder is not causal, so a fixed-length "
            "decoder step would give wrong tokens; export model.pt only (remove spec.trace.split)",
            field="spec.trace.split",
        )
    for role, module in (("encoder", encoder), ("decoder_step", step)):
        part = parts[role]
        traced, found = _trace_part(module, examples[role], job.trace.strict, split.refuse_tracer_warnings, role,
                                    part.file)
        part.module = optimize(traced, job.target.optimize)
        part.tracer_warnings = found
        # A trace that is wrong at its own dummy inputs is never written (the fresh-process verify checks the rest).
        with torch.no_grad():
            got = part.module(*examples[role])[0]
        want = part.references[f"{role}.traced/output_0"]
        worst = float((got.detach().cpu().double() - want.double()).abs().max())
        if not torch.allclose(got.detach().cpu().double(), want.double(), atol=atol, rtol=rtol):
            raise WorkerError(
                "trace", "trace_failed",
                f"the traced {role} ({part.file}) differs from the eager model at its own dummy inputs (max abs "
                f"error {worst:.3g}); this model cannot be split faithfully",
                field="spec.trace.split",
            )

    if job.trace.strict is False and not job.trace.check_shapes:
        split_warnings.append({
            "code": "unchecked_split",
            "field": "spec.trace.check_shapes",
            "message": "the encoder and decoder step are checked at the traced batch size only (and with a padded "
            "source); add check_shapes to prove other batch sizes and source lengths",
        })
    generation = {
        **settings,
        "encoder": {"file": ENCODER_FILE, "input_signature": parts["encoder"].input_signature,
                    "output_signature": parts["encoder"].output_signature},
        "decoder_step": {"file": DECODER_STEP_FILE, "input_signature": parts["decoder_step"].input_signature,
                         "output_signature": parts["decoder_step"].output_signature},
        "connections": [
            {"from": "encoder.output.encoder_hidden_states", "to": "decoder_step.input.encoder_hidden_states"},
            {"from": "encoder.input.attention_mask", "to": "decoder_step.input.attention_mask"},
        ],
        "notes": [
            "decoder_input_ids has a fixed length, max_length: right-pad it with pad_token_id; position is each "
            "row's index of its last real token, and next_token_logits are the logits for the token after it",
            "no key/value cache: every step recomputes the whole buffer (cost grows with max_length, not with the "
            "step); encoder batch size and source length may vary as check_shapes proved",
        ],
        "loop": LOOP,
        "padding_check": {"max_abs_error": padding_gap, "bound": padding_bound, "cases": len(padding_gaps)},
    }
    return SplitResult(artifacts=list(parts.values()), generation=generation, warnings=split_warnings)


def save_split(result: SplitResult, job: Job, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Write encoder.pt and decoder_step.pt (each embedding its own record) and describe them for the bundle."""
    described = []
    for part in result.artifacts:
        path = os.path.join(job.staging_dir, part.file)
        own = {**record, "role": part.role, "input_signature": part.input_signature,
               "output_signature": part.output_signature, "tracer_warnings": part.tracer_warnings,
               "generation": result.generation}
        try:
            torch.jit.save(part.module, path, _extra_files={RECORD_NAME: json.dumps(own, sort_keys=True).encode()})
        except Exception as exc:
            raise WorkerError(
                "serialize", "serialize_failed", f"torch.jit.save failed for {part.file}: {describe(exc)}",
                detail=traceback_tail(exc),
            ) from exc
        part.sha256 = sha256_file(path)
        described.append({
            "role": part.role, "file": part.file, "sha256": part.sha256, "bytes": os.path.getsize(path),
            "input_signature": part.input_signature, "output_signature": part.output_signature,
            "tracer_warnings": part.tracer_warnings, "cases": part.cases,
        })
    return described


# ---------------------------------------------------------------------------------------------------------------
# Cached generation (split.cache: true, or kind decoder-only): prefill/encoder + step + full, cache_split.py


def export_cached(model: torch.nn.Module, built: inputs.BuiltInputs, split: SplitSpec, staging: str) -> dict[str, Any]:
    """Trace the cached artifacts into `staging` and record generate()'s greedy tokens on prompts made from the
    traced input_ids (the whole first row, its first half, a third), which the verifying process must reproduce from
    the artifacts alone. Returns the record's `generation` object and the artifacts (for bundle completeness)."""
    from .cache_split import trace_cached

    if "input_ids" not in built.names:
        raise WorkerError("trace", "bad_request",
                          "spec.trace.split: the prompt is the input_ids tensor, which is missing",
                          field="spec.inputs.tensors")
    ids = built.tensors[built.names.index("input_ids")].to("cpu", torch.long)
    config = getattr(model, "config", None)
    encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    if encoder_decoder != (split.kind == "encoder-decoder"):
        raise WorkerError(
            "trace", "bad_config",
            f"spec.trace.split.kind is {split.kind}, but {type(model).__name__} is "
            f"{'an encoder-decoder' if encoder_decoder else 'a decoder-only'} model",
            field="spec.trace.split.kind",
        )
    try:
        description = trace_cached(model, split.kind, split.max_length, ids[:1], staging, split.drift_limit)
    except ValueError as exc:
        raise WorkerError("trace", "bad_config", str(exc), field="spec.trace.split") from exc
    except Exception as exc:  # any failure of the cached trace is about the split
        raise WorkerError("trace", "trace_failed", "the cached generation artifacts could not be traced: "
                          + describe(exc), field="spec.trace.split", detail=traceback_tail(exc)) from exc
    row = [int(v) for v in ids[0].tolist()]
    prompts = [row, row[: max(1, len(row) // 2)], row[: max(1, len(row) // 3)]]
    reference = []
    for prompt in prompts:
        if split.kind == "decoder-only":
            new_tokens = min(8, split.max_length - len(prompt) + 1)
        else:
            new_tokens = min(8, split.max_length)
        prompt_ids = torch.tensor([prompt], dtype=torch.long)
        with torch.no_grad():
            out = model.generate(  # type: ignore[operator]
                input_ids=prompt_ids, attention_mask=torch.ones_like(prompt_ids), do_sample=False, num_beams=1,
                max_new_tokens=new_tokens, use_cache=True,
            )
        skip = 1 if encoder_decoder else len(prompt)
        tokens = [int(v) for v in out[0, skip:].tolist()]
        reference.append({"prompt": prompt, "max_new_tokens": new_tokens, "tokens": tokens})
    traced = description.pop("traced", {})
    artifacts = [{"role": role, "file": entry["file"]} for role, entry in description["artifacts"].items()]
    artifacts.append({"role": "interface", "file": "generation.json"})
    return {
        "generation": {**description, "cache": True, "reference": reference, "traced": traced},
        "artifacts": artifacts,
    }
