"""The export op: load → inputs → trace → serialize → reference, each a reported stage.

Imported only once the runtime is known to have torch, transformers and safetensors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import save_file

from . import PROTOCOL_VERSION, WORKER_VERSION, inputs, probe
from .errors import WorkerError, describe, traceback_tail
from .outputs import flatten, signature
from .protocol import (
    MODEL_FILE,
    RECORD_NAME,
    REFERENCE_FILE,
    SAMPLE_FILE,
    Job,
    ModelSpec,
    ProgressFn,
    _Reader,
    no_progress,
)

MODEL_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


# ---------------------------------------------------------------------------------------------------------------
# Stages


class Stages:
    """Reports each stage's start and end, times it, and turns stray exceptions into `internal` errors."""

    def __init__(self, progress: ProgressFn) -> None:
        self.progress = progress
        self.timings_ms: dict[str, int] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.progress(name, "start", None)
        started = time.perf_counter()
        try:
            yield
        except WorkerError as error:
            if error.stage is None:
                error.stage = name
            raise
        except Exception as exc:  # noqa: BLE001 - an unexpected failure is still answered, as `internal`
            raise WorkerError(name, "internal", describe(exc), detail=traceback_tail(exc)) from exc
        elapsed = round((time.perf_counter() - started) * 1000)
        self.timings_ms[name] = elapsed
        self.progress(name, "done", elapsed)


# ---------------------------------------------------------------------------------------------------------------
# Load


@dataclass
class LoadedModel:
    model: torch.nn.Module
    warnings: list[dict[str, Any]] = field(default_factory=list)
    adjusted_config: dict[str, Any] = field(default_factory=dict)
    untied_parameters: list[str] = field(default_factory=list)


def _model_class_names(transformers: Any) -> list[str]:
    return [n for n in dir(transformers) if n[:1].isupper() and (n.endswith("Model") or "Model" in n or "For" in n)]


def resolve_class(name: str) -> tuple[type, bool]:
    """The transformers class called `name` and whether it is an Auto* class; `unknown_class` otherwise."""
    transformers = probe.import_transformers()
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    try:
        candidate = getattr(transformers, name)
    except Exception:  # noqa: BLE001 - AttributeError, or a lazy import that fails for a missing backend
        candidate = None
    is_auto = isinstance(candidate, type) and issubclass(candidate, _BaseAutoModelClass)
    is_model = (
        isinstance(candidate, type)
        and issubclass(candidate, transformers.PreTrainedModel)
        and not name.endswith("PreTrainedModel")
    )
    if is_auto or is_model:
        assert isinstance(candidate, type)
        return candidate, is_auto
    close = difflib.get_close_matches(name, _model_class_names(transformers), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    what = "not a model class" if candidate is not None else "not a class that transformers exports"
    raise WorkerError(
        "load", "unknown_class",
        f"{name} is {what} (a PreTrainedModel subclass such as BertModel, or an AutoModel* class){hint}",
        field="spec.model.class",
    )


def known_config_keys(config: Any) -> set[str]:
    keys = set(dir(config)) | set(getattr(config, "attribute_map", {}) or {})
    if dataclasses.is_dataclass(config):
        keys |= {f.name for f in dataclasses.fields(config)}
    return keys


def unknown_key_warnings(keys: list[str], known: set[str], config_name: str) -> list[dict[str, Any]]:
    """A warning per config key the config class does not define: transformers keeps such keys silently."""
    found = []
    for key in keys:
        if key in known or f"_{key}" in known:  # `attn_implementation` is stored as `_attn_implementation`
            continue
        close = difflib.get_close_matches(key, [k for k in known if not k.startswith("_")], n=2, cutoff=0.75)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        found.append(
            {
                "code": "unknown_config_key",
                "field": f"spec.model.config.{key}",
                "message": f"unknown config key {key!r}: {config_name} does not define it, so transformers stores "
                f"it and the model most likely ignores it{hint}",
            }
        )
    return found


def guess_config_key(exc: BaseException, config: dict[str, Any]) -> str | None:
    """The config key an exception is about, when the exception tells."""
    text = str(exc)
    quoted = re.search(r"field '([^']+)'", text)
    if quoted and quoted.group(1) in config:
        return quoted.group(1)
    candidates = [key for key in config if re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", text)]
    if not candidates and isinstance(exc, KeyError) and exc.args:
        candidates = [key for key, value in config.items() if isinstance(value, str) and value == exc.args[0]]
    if not candidates:
        lowered = text.lower()
        candidates = [key for key in config if key.replace("_", " ") in lowered]
    return candidates[0] if len(candidates) == 1 else None


def bad_config(exc: BaseException, config: dict[str, Any], what: str) -> WorkerError:
    key = guess_config_key(exc, config)
    return WorkerError(
        "load", "bad_config",
        f"{what}: {describe(exc)}",
        field=f"spec.model.config.{key}" if key else "spec.model.config",
        detail=traceback_tail(exc),
    )


def refuse_pickle_only(path: str) -> None:
    """A local folder with pickle weights and no safetensors weights is refused unless pickle is allowed."""
    try:
        names = os.listdir(path)
    except OSError:
        return  # from_pretrained reports the folder itself
    if any(n.endswith(".safetensors") or n.endswith(".safetensors.index.json") for n in names):
        return
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise WorkerError(
            "load", "pickle_refused",
            f"{path} holds only pickle weights ({', '.join(pickles)}), which can run code when loaded; allow them "
            "with `spec.model.allow_pickle: true` in the manifest and `--allow-pickle` on the command line, or "
            "convert the weights to safetensors",
            field="spec.model.allow_pickle",
        )


def _adjust_for_torchscript(config: Any, spec: ModelSpec) -> dict[str, Any]:
    """What torchscript: true changes in the config (the rest of the guide's promise is the wrapper and untying)."""
    adjusted: dict[str, Any] = {"torchscript": True}
    config.torchscript = True
    # A traced module returns tensors only; transformers 5 returns the key/value cache as a Cache object.
    if "use_cache" not in spec.config and getattr(config, "use_cache", None):
        config.use_cache = False
        adjusted["use_cache"] = False
    return adjusted


def attention_kwargs(spec: ModelSpec) -> dict[str, str]:
    """`attn_implementation` for the config or from_pretrained; the job's field, which `config` may not contradict."""
    in_config = spec.config.get("attn_implementation")
    if spec.attn_implementation is None:
        return {"attn_implementation": in_config} if isinstance(in_config, str) else {}
    if in_config is not None and in_config != spec.attn_implementation:
        raise WorkerError(
            "load", "bad_config",
            f"config sets attn_implementation {in_config!r} but spec.model.attn_implementation is "
            f"{spec.attn_implementation!r}; set it once, in spec.model.attn_implementation",
            field="spec.model.config.attn_implementation",
        )
    return {"attn_implementation": spec.attn_implementation}


def attention_error(exc: BaseException) -> WorkerError | None:
    """`bad_config` on spec.model.attn_implementation when transformers refuses the attention implementation."""
    text = str(exc)
    if "attn_implementation" not in text and "has been toggled on" not in text:
        return None
    return WorkerError(
        "load", "bad_config", f"the attention implementation cannot be used: {describe(exc)}",
        field="spec.model.attn_implementation", detail=traceback_tail(exc),
    )


def _random_init(cls: type, is_auto: bool, spec: ModelSpec, loaded: LoadedModel) -> torch.nn.Module:
    if is_auto:
        raise WorkerError(
            "load", "bad_config",
            f"{spec.class_name} cannot be randomly initialised: it picks its class from a pretrained config; name "
            "a concrete class (such as BertModel) or give spec.model.pretrained",
            field="spec.model.class",
        )
    config_class = cls.config_class  # type: ignore[attr-defined]
    try:
        known = known_config_keys(config_class())
    except Exception:  # noqa: BLE001 - a config class that needs arguments: judge by its class attributes
        known = known_config_keys(config_class)
    loaded.warnings += unknown_key_warnings(list(spec.config), known, config_class.__name__)
    attention = attention_kwargs(spec)
    try:
        config = config_class(**{**spec.config, **attention})
    except Exception as exc:  # noqa: BLE001 - TypeError, ValueError, strict dataclass validation errors
        error = attention_error(exc) or bad_config(exc, spec.config, f"{config_class.__name__} rejected the config")
        raise error from exc
    if spec.torchscript:
        loaded.adjusted_config = _adjust_for_torchscript(config, spec)
    torch.manual_seed(spec.seed)
    try:
        model = cls(config)
    except Exception as exc:  # noqa: BLE001
        raise attention_error(exc) or bad_config(exc, spec.config, f"{cls.__name__} could not be built") from exc
    return model.to(MODEL_DTYPES[spec.dtype])


def _from_pretrained(cls: type, is_auto: bool, spec: ModelSpec, loaded: LoadedModel) -> torch.nn.Module:
    transformers = probe.import_transformers()
    assert spec.pretrained is not None
    source = spec.pretrained
    if spec.pretrained_is_local and not spec.allow_pickle:
        refuse_pickle_only(source)
    common: dict[str, Any] = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
    attention = attention_kwargs(spec)
    config_class = transformers.AutoConfig if is_auto else cls.config_class  # type: ignore[attr-defined]
    try:
        if is_auto:
            config = config_class.from_pretrained(source, **common)
        else:
            config = config_class.from_pretrained(source, revision=spec.revision)
    except Exception as exc:  # noqa: BLE001
        raise WorkerError(
            "load", "load_failed", f"could not load the config of {source}: {describe(exc)}",
            field="spec.model.pretrained", detail=traceback_tail(exc),
        ) from exc
    loaded.warnings += unknown_key_warnings(list(spec.config), known_config_keys(config), type(config).__name__)
    for key, value in spec.config.items():
        if key == "attn_implementation":
            continue  # given to from_pretrained below
        try:
            setattr(config, key, value)
        except Exception as exc:  # noqa: BLE001
            raise bad_config(exc, {key: value}, f"{type(config).__name__} rejected the override") from exc
    if spec.torchscript:
        loaded.adjusted_config = _adjust_for_torchscript(config, spec)
    torch.manual_seed(spec.seed)  # weights missing from the checkpoint are initialised reproducibly
    try:
        return cls.from_pretrained(  # type: ignore[attr-defined,no-any-return]
            source,
            config=config,
            use_safetensors=True if not spec.allow_pickle else None,
            dtype=MODEL_DTYPES[spec.dtype],
            **common,
            **attention,
        )
    except Exception as exc:  # noqa: BLE001
        text = str(exc)
        attention_failure = attention_error(exc)
        if attention_failure is not None:
            raise attention_failure from exc
        if not spec.allow_pickle and ".safetensors" in text:
            raise WorkerError(
                "load", "pickle_refused",
                f"{source} has no safetensors weights ({describe(exc)}); pickle weights are refused unless allowed "
                "with `spec.model.allow_pickle: true` in the manifest and `--allow-pickle` on the command line",
                field="spec.model.allow_pickle", detail=traceback_tail(exc),
            ) from exc
        if isinstance(exc, (TypeError, ValueError, KeyError)) and spec.config and guess_config_key(exc, spec.config):
            raise bad_config(exc, spec.config, f"{cls.__name__} failed with the config overrides") from exc
        raise WorkerError(
            "load", "load_failed", f"could not load {source}: {describe(exc)}",
            field="spec.model.pretrained", detail=traceback_tail(exc),
        ) from exc


def _set_parameter(model: torch.nn.Module, name: str, parameter: torch.nn.Parameter) -> None:
    owner_name, _, attribute = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    setattr(owner, attribute, parameter)


def untie_weights(model: torch.nn.Module) -> list[str]:
    """Clone every parameter shared under several names, so the trace holds no tied parameters.

    The output embedding gets the clone of a tied input embedding (as transformers' torchscript=True once did);
    any other shared parameter (e.g. a decoder bias) is cloned under its second and later names.
    """
    untied: list[str] = []

    def _embedding(getter: str) -> torch.nn.Module | None:
        try:
            module = getattr(model, getter)()
        except (AttributeError, NotImplementedError):
            return None
        return module if isinstance(module, torch.nn.Module) else None

    inputs_emb, outputs_emb = _embedding("get_input_embeddings"), _embedding("get_output_embeddings")
    if inputs_emb is not None and outputs_emb is not None:
        shared = getattr(outputs_emb, "weight", None)
        if shared is getattr(inputs_emb, "weight", None) and isinstance(shared, torch.Tensor):
            outputs_emb.weight = torch.nn.Parameter(shared.detach().clone(), requires_grad=shared.requires_grad)
            untied += [n for n, p in model.named_parameters() if p is outputs_emb.weight]
    first_names: dict[int, str] = {}
    for name, parameter in list(model.named_parameters(remove_duplicate=False)):
        if id(parameter) not in first_names:
            first_names[id(parameter)] = name
            continue
        clone = torch.nn.Parameter(parameter.detach().clone(), requires_grad=parameter.requires_grad)
        _set_parameter(model, name, clone)
        untied.append(name)
    if untied and hasattr(getattr(model, "config", None), "tie_word_embeddings"):
        model.config.tie_word_embeddings = False  # type: ignore[union-attr]
    return untied


def load_model(spec: ModelSpec) -> LoadedModel:
    """The model of the job, in eval mode, untied when torchscript is true."""
    cls, is_auto = resolve_class(spec.class_name)
    loaded = LoadedModel(model=torch.nn.Module())
    if spec.pretrained is None:
        model = _random_init(cls, is_auto, spec, loaded)
    else:
        model = _from_pretrained(cls, is_auto, spec, loaded)
    model.eval()
    if spec.torchscript:
        loaded.untied_parameters = untie_weights(model)
    loaded.model = model
    return loaded


# ---------------------------------------------------------------------------------------------------------------
# Trace


class ForwardWrapper(torch.nn.Module):
    """Calls the model with keyword arguments (names in manifest order) and, for torchscript, returns tuples."""

    def __init__(self, model: torch.nn.Module, names: list[str], tuple_outputs: bool) -> None:
        super().__init__()
        self.model = model
        self.names = list(names)
        self.tuple_outputs = tuple_outputs

    def call_model(self, *args: torch.Tensor) -> Any:
        return self.model(**dict(zip(self.names, args, strict=True)))

    def forward(self, *args: torch.Tensor) -> Any:
        output = self.call_model(*args)
        if self.tuple_outputs and hasattr(output, "to_tuple"):
            return output.to_tuple()
        return output


def _format_warning(warning: warnings.WarningMessage) -> str:
    where = warning.filename.replace("\\", "/")
    for marker in ("site-packages/", "dist-packages/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    first = str(warning.message).strip().splitlines()[0] if str(warning.message).strip() else ""
    return f"{first} ({where}:{warning.lineno})"


def find_cache(output: Any) -> Any:
    """The first key/value cache object (DynamicCache, EncoderDecoderCache, ...) inside an output, else None."""
    if output is None or isinstance(output, torch.Tensor):
        return None
    if any(base.__name__ == "Cache" for base in type(output).__mro__) or type(output).__name__.endswith("Cache"):
        return output
    values = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else ()
    for value in values:
        found = find_cache(value)
        if found is not None:
            return found
    return None


def cache_error(model: torch.nn.Module, cache: Any, spec: ModelSpec) -> WorkerError:
    """Why a model that returns its key/value cache cannot be traced faithfully, and the setting that helps."""
    if "use_cache" in spec.config:
        how = "set spec.model.config.use_cache: false (or remove it: torchscript: true then turns the cache off)"
        where = "spec.model.config.use_cache"
    else:
        how = "set spec.model.config.use_cache: false, or spec.model.torchscript: true, which turns it off"
        where = "spec.model.config.use_cache" if spec.torchscript else "spec.model.torchscript"
    return WorkerError(
        "trace", "trace_failed",
        f"{type(model).__name__} returns its key/value cache ({type(cache).__name__}) because use_cache is on: a "
        "traced module returns tensors only, and a cache traced at one length silently stops matching the model at "
        f"the next step; {how}. For generation outside Python see spec.trace.split (encoder-decoder models)",
        field=where,
    )


def forward_hint(model: torch.nn.Module, names: list[str]) -> tuple[str, str | None]:
    """A sentence (and a manifest field) explaining a failed eager forward, where the cause is a known one."""
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False) and not {"decoder_input_ids", "decoder_inputs_embeds"} & set(names):
        return (
            f"; {type(model).__name__} is an encoder-decoder model and most such models need decoder_input_ids: add a "
            "tensor {name: decoder_input_ids, from: random, shape: [batch, sequence]} (the decoder's inputs are "
            "traced at that length too)",
            "spec.inputs.tensors",
        )
    return "", None


def run_eager(
    wrapper: ForwardWrapper, tensors: list[torch.Tensor], spec: ModelSpec | None = None
) -> list[tuple[str, torch.Tensor]]:
    """The eager outputs, named; an exception in forward() is `forward_failed`, a returned cache `trace_failed`."""
    try:
        with torch.no_grad():
            raw = wrapper.call_model(*tensors)
    except Exception as exc:  # noqa: BLE001 - the model's own code failed
        hint, hint_field = forward_hint(wrapper.model, wrapper.names)
        raise WorkerError(
            "trace", "forward_failed", f"the model's forward() failed on the dummy inputs: {describe(exc)}{hint}",
            field=hint_field, detail=traceback_tail(exc),
        ) from exc
    cache = find_cache(raw)
    if cache is not None:
        raise cache_error(wrapper.model, cache, spec or ModelSpec(class_name=type(wrapper.model).__name__))
    try:
        return flatten(raw)
    except TypeError as exc:
        raise WorkerError(
            "trace", "trace_failed", f"the model's outputs cannot be traced: {describe(exc)}",
            detail=traceback_tail(exc),
        ) from exc


def trace_module(
    wrapper: ForwardWrapper, tensors: list[torch.Tensor], strict: bool, hardware: str
) -> tuple[torch.jit.ScriptModule, list[str]]:
    """The traced module and every TracerWarning raised while tracing (none filtered)."""
    example = tuple(tensors)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        try:
            if hardware == "inf1":
                import torch_neuron  # noqa: F401  (registers torch.neuron)

                traced = torch.neuron.trace(wrapper, example_inputs=list(example))  # type: ignore[attr-defined]
            elif hardware == "inf2":
                import torch_neuronx

                traced = torch_neuronx.trace(wrapper, example)
            else:
                traced = torch.jit.trace(wrapper, example, strict=strict, check_trace=False)
        except Exception as exc:  # noqa: BLE001
            hint = ""
            if "strict" in str(exc) or "dict" in str(exc).lower():
                hint = " (dict outputs need spec.model.torchscript: true or spec.trace.strict: false)"
            raise WorkerError(
                "trace", "trace_failed", f"tracing failed: {describe(exc)}{hint}",
                field="spec.trace.strict" if hint else None, detail=traceback_tail(exc),
            ) from exc
    tracer_warnings = []
    for warning in caught:
        if issubclass(warning.category, torch.jit.TracerWarning):
            tracer_warnings.append(_format_warning(warning))
        else:
            text = warnings.formatwarning(warning.message, warning.category, warning.filename, warning.lineno)
            sys.stderr.write(text)
    if strict and tracer_warnings:
        first = tracer_warnings[0]
        sentence, _, where = first.rpartition(" (")
        short = sentence.split(". ")[0].rstrip(".") + f". ({where}" if where else first
        raise WorkerError(
            "trace", "strict_violation",
            f"strict tracing refused the trace: {len(tracer_warnings)} TracerWarning(s), the first: "
            f"\"{short}\"; set spec.trace.strict: false to keep such a trace and let check_shapes tell "
            "whether it generalises",
            field="spec.trace.strict",
        )
    return traced, tracer_warnings


def optimize(module: torch.jit.ScriptModule, how: str) -> torch.jit.ScriptModule:
    try:
        if how == "freeze":
            return torch.jit.freeze(module.eval())
        if how == "optimize_for_inference":
            return torch.jit.optimize_for_inference(module.eval())
    except Exception as exc:  # noqa: BLE001
        raise WorkerError(
            "trace", "trace_failed", f"{how} failed on the traced module: {describe(exc)}",
            field="spec.target.optimize", detail=traceback_tail(exc),
        ) from exc
    return module


# ---------------------------------------------------------------------------------------------------------------
# Reference


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu").contiguous().clone()


def traced_shape(tensors: list[torch.Tensor]) -> list[int]:
    """[batch, sequence] of the agreed inputs (fewer entries when no input has those dimensions)."""
    shape: list[int] = []
    for dim in (0, 1):
        sizes = [int(t.shape[dim]) for t in tensors if t.dim() > dim]
        if not sizes:
            break
        shape.append(sizes[0])
    return shape


def write_reference(
    staging: str,
    built: inputs.BuiltInputs,
    traced_outputs: list[tuple[str, torch.Tensor]],
    wrapper: ForwardWrapper,
    job: Job,
    device: str,
    split: SplitResult | None = None,
) -> list[dict[str, Any]]:
    """Sample inputs and eager reference outputs for the traced shape and every check shape (and the split
    artifacts' cases, named `<role>.<case>`, listed in the `tsexport.artifacts` metadata)."""
    samples: dict[str, torch.Tensor] = {}
    references: dict[str, torch.Tensor] = {}
    cases: list[dict[str, Any]] = [{"case": "traced", "shape": traced_shape(built.tensors)}]
    for name, tensor in zip(built.names, built.tensors, strict=True):
        samples[f"traced/{name}"] = _cpu(tensor)
    for i, (_, tensor) in enumerate(traced_outputs):
        references[f"traced/output_{i}"] = _cpu(tensor)
    vocab_size = getattr(getattr(wrapper.model, "config", None), "vocab_size", None)
    for k, shape in enumerate(job.trace.check_shapes):
        case = f"check{k}"
        entry: dict[str, Any] = {"case": case, "shape": list(shape)}
        remade = inputs.remake(built, shape, job.model.seed + 1 + k, vocab_size)
        for name, tensor in zip(built.names, remade, strict=True):
            samples[f"{case}/{name}"] = _cpu(tensor)
        try:
            with torch.no_grad():
                outputs = flatten(wrapper.call_model(*[t.to(device) for t in remade]))
            for i, (_, tensor) in enumerate(outputs):
                references[f"{case}/output_{i}"] = _cpu(tensor)
        except Exception as exc:  # noqa: BLE001 - the eager model itself cannot run at this shape
            entry["error"] = f"the eager model failed at shape {shape}: {describe(exc)}"
        cases.append(entry)
    metadata = {"tsexport.cases": json.dumps(cases), "tsexport.inputs": json.dumps(built.names)}
    if split is not None:
        for part in split.artifacts:
            samples.update(part.samples)
            references.update(part.references)
        metadata["tsexport.artifacts"] = json.dumps(
            [{"role": p.role, "file": p.file, "inputs": p.input_names, "cases": p.cases} for p in split.artifacts]
        )
    save_file(samples, os.path.join(staging, SAMPLE_FILE), metadata=metadata)
    save_file(references, os.path.join(staging, REFERENCE_FILE), metadata=metadata)
    return cases


# ---------------------------------------------------------------------------------------------------------------
# Encoder/decoder split: encoder.pt and decoder_step.pt beside model.pt, for generation outside Python

SPLIT_KINDS = ("encoder-decoder",)
DEFAULT_SPLIT_MAX_LENGTH = 64
ENCODER_FILE = "encoder.pt"
DECODER_STEP_FILE = "decoder_step.pt"
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


@dataclass(frozen=True)
class SplitSpec:
    """`spec.trace.split`: which extra artifacts to export (only `encoder-decoder` for now) and at what length."""

    kind: str = "encoder-decoder"
    max_length: int = DEFAULT_SPLIT_MAX_LENGTH


def parse_split(raw: Any) -> SplitSpec | None:
    """The split option of a job (`job.trace.split`, an object), `bad_request` with its manifest path when wrong."""
    if raw is None or isinstance(raw, SplitSpec):
        return raw
    r = _Reader(raw, "spec.trace.split")
    kind = r.choice("kind", SPLIT_KINDS, SPLIT_KINDS[0])
    max_length = r.get("max_length", (int,), DEFAULT_SPLIT_MAX_LENGTH)
    if max_length < 2:
        raise WorkerError(
            None, "bad_request", "`spec.trace.split.max_length` must be at least 2 (the start token and one more)",
            field="spec.trace.split.max_length",
        )
    return SplitSpec(kind=kind, max_length=max_length)


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


def _token_ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def generation_settings(model: torch.nn.Module, split: SplitSpec) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The token ids and rules of greedy generation, from the model's generation config, and warnings about
    settings the recorded loop does not apply."""
    config = getattr(model, "config", None)
    generation = getattr(model, "generation_config", None)

    def pick(name: str) -> Any:
        value = getattr(generation, name, None) if generation is not None else None
        return value if value is not None else getattr(config, name, None)

    suppress = _token_ids(pick("suppress_tokens"))
    unapplied: dict[str, Any] = {}
    for words in pick("bad_words_ids") or []:
        if len(words) == 1:
            suppress.append(int(words[0]))  # a one-token bad word is a suppressed token
        else:
            unapplied.setdefault("bad_words_ids", []).append(list(words))
    for name, neutral in UNAPPLIED_DEFAULTS.items():
        value = getattr(generation, name, neutral) if generation is not None else neutral
        if value is not None and value != neutral:
            unapplied[name] = value
    start = pick("decoder_start_token_id")
    if start is None:
        start = pick("bos_token_id")
    settings = {
        "kind": split.kind,
        "strategy": "greedy",
        "max_length": split.max_length,
        "decoder_start_token_id": start,
        "eos_token_ids": _token_ids(pick("eos_token_id")),
        "pad_token_id": pick("pad_token_id"),
        "forced_bos_token_id": pick("forced_bos_token_id"),
        "forced_eos_token_id": pick("forced_eos_token_id"),
        "suppress_token_ids": sorted(set(suppress)),
        "begin_suppress_token_ids": _token_ids(pick("begin_suppress_tokens")),
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
    module: torch.nn.Module, example: list[torch.Tensor], strict: bool, role: str, file: str
) -> tuple[torch.jit.ScriptModule, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        try:
            traced = torch.jit.trace(module, tuple(example), strict=strict, check_trace=False)
        except Exception as exc:  # noqa: BLE001
            raise WorkerError(
                "trace", "trace_failed", f"tracing the {role} ({file}) failed: {describe(exc)}",
                field="spec.trace.split", detail=traceback_tail(exc),
            ) from exc
    found = [_format_warning(w) for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    for w in caught:
        if not issubclass(w.category, torch.jit.TracerWarning):
            sys.stderr.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno))
    if strict and found:
        raise WorkerError(
            "trace", "strict_violation",
            f"strict tracing refused the {role} ({file}): {len(found)} TracerWarning(s), the first: \"{found[0]}\"; "
            "set spec.trace.strict: false to keep such a trace and let check_shapes tell whether it generalises",
            field="spec.trace.strict",
        )
    return traced, found


def _default_tolerance(job: Job) -> tuple[float, float]:
    recorded = job.extra_record.get("tolerance") if isinstance(job.extra_record.get("tolerance"), dict) else {}
    defaults = {"float16": (1e-2, 1e-2), "bfloat16": (5e-2, 5e-2)}.get(job.model.dtype, (1e-5, 1e-4))
    return float(recorded.get("atol", defaults[0])), float(recorded.get("rtol", defaults[1]))


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
        except Exception as exc:  # noqa: BLE001
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
                part.samples[f"{name}/{input_name}"] = _cpu(tensor)
            for i, tensor in enumerate(outs):
                part.references[f"{name}/output_{i}"] = _cpu(tensor)
            if case == "traced":
                examples[role] = args
                part.input_signature = signature(list(zip(part.input_names, args, strict=True)))
                part.output_signature = signature(list(zip(part.output_names, outs, strict=True)))

    # The fixed-length buffer is faithful only when padding after `position` cannot change the logits (causal
    # self-attention): the padded step is compared with the full model on each unpadded prefix. Reassociation in
    # longer matmuls gives small differences, a decoder that looks ahead gives large ones.
    atol, rtol = _default_tolerance(job)
    padding_gap = max(padding_gaps) if padding_gaps else 0.0
    padding_bound = max(1e-3, 100 * atol) + max(1e-2, 10 * rtol) * padding_scale
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
        traced, found = _trace_part(module, examples[role], job.trace.strict, role, part.file)
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
    from .verify import sha256_file

    described = []
    for part in result.artifacts:
        path = os.path.join(job.staging_dir, part.file)
        own = {**record, "role": part.role, "input_signature": part.input_signature,
               "output_signature": part.output_signature, "tracer_warnings": part.tracer_warnings,
               "generation": result.generation}
        try:
            torch.jit.save(part.module, path, _extra_files={RECORD_NAME: json.dumps(own, sort_keys=True).encode()})
        except Exception as exc:  # noqa: BLE001
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
# The op


def export(
    job: Job, progress: ProgressFn = no_progress, split: SplitSpec | dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run the whole export job; returns the `result.data` of the protocol.

    `split` is `spec.trace.split` (a SplitSpec or the job's object); when not given it is read from
    `job.trace.split`, where the protocol's job parser puts it once the manifest has the field.
    """
    split_spec = parse_split(split if split is not None else getattr(job.trace, "split", None))
    try:
        probe.require("torch", "transformers", "safetensors")
        probe.require_target(job.target.hardware)  # before anything is loaded
    except WorkerError as error:
        error.stage = error.stage or "load"
        raise
    stages = Stages(progress)
    device = "cuda" if job.target.hardware == "cuda" else "cpu"
    with contextlib.redirect_stdout(sys.stderr):
        with stages.stage("load"):
            loaded = load_model(job.model)
            model = loaded.model.to(device)
        with stages.stage("inputs"):
            same_source = job.inputs.tokenizer == job.model.pretrained
            built = inputs.build(
                job.inputs, model, job.model.seed,
                tokenizer_revision=job.model.revision if same_source else None,
                trust_remote_code=job.model.trust_remote_code,
            )
            example = [t.to(device) for t in built.tensors]
        with stages.stage("trace"):
            wrapper = ForwardWrapper(model, built.names, tuple_outputs=job.model.torchscript).eval()
            if split_spec is not None:
                check_split_model(model, split_spec, built.names, job.target.hardware)
            eager_outputs = run_eager(wrapper, example, job.model)
            traced, tracer_warnings = trace_module(wrapper, example, job.trace.strict, job.target.hardware)
            traced = optimize(traced, job.target.optimize)
            split_result = trace_split(model, built, example, job, split_spec, device) if split_spec else None
        if split_result is not None:
            loaded.warnings += split_result.warnings
        input_signature = signature(list(zip(built.names, built.tensors, strict=True)))
        attn_implementation = getattr(getattr(loaded.model, "config", None), "_attn_implementation", None)
        output_signature = signature(eager_outputs)
        versions = probe.versions()
        text = {"tokens": built.text.tokens, "ids": built.text.ids} if built.text else None
        worker_record: dict[str, Any] = {
            "protocol": PROTOCOL_VERSION,
            "worker_version": WORKER_VERSION,
            "model_class": type(loaded.model).__name__,
            "input_signature": input_signature,
            "output_signature": output_signature,
            "tracer_warnings": tracer_warnings,
            "warnings": loaded.warnings,
            "untied_parameters": loaded.untied_parameters,
            "adjusted_config": loaded.adjusted_config,
            "text": text,
            "torchscript": job.model.torchscript,
            "strict": job.trace.strict,
            "seed": job.model.seed,
            "dtype": job.model.dtype,
            "attn_implementation": attn_implementation,
            "target": {"hardware": job.target.hardware, "optimize": job.target.optimize, "device": device},
            "versions": versions,
        }
        artifacts: list[dict[str, Any]] = []
        with stages.stage("serialize"):
            os.makedirs(job.staging_dir, exist_ok=True)
            if split_result is not None:
                artifacts = save_split(split_result, job, {**job.extra_record, **worker_record})
                worker_record["artifacts"] = artifacts
                worker_record["generation"] = split_result.generation
            record = {**job.extra_record, **worker_record}
            try:
                torch.jit.save(
                    traced,
                    os.path.join(job.staging_dir, MODEL_FILE),
                    _extra_files={RECORD_NAME: json.dumps(record, sort_keys=True).encode("utf-8")},
                )
            except Exception as exc:  # noqa: BLE001
                raise WorkerError(
                    "serialize", "serialize_failed", f"torch.jit.save failed: {describe(exc)}",
                    detail=traceback_tail(exc),
                ) from exc
        with stages.stage("reference"):
            cases = write_reference(job.staging_dir, built, eager_outputs, wrapper, job, device, split_result)
    extra: dict[str, Any] = {}
    if split_result is not None:
        extra = {"artifacts": artifacts, "generation": split_result.generation}
    return {
        **extra,
        "input_signature": input_signature,
        "output_signature": output_signature,
        "cases": cases,
        "tracer_warnings": tracer_warnings,
        "warnings": loaded.warnings,
        "untied_parameters": loaded.untied_parameters,
        "adjusted_config": loaded.adjusted_config,
        "text": text,
        "model_class": type(loaded.model).__name__,
        "attn_implementation": attn_implementation,
        "hardware": job.target.hardware,
        "device": device,
        "versions": versions,
        "timings_ms": stages.timings_ms,
    }
