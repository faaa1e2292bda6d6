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
) -> list[dict[str, Any]]:
    """Sample inputs and eager reference outputs for the traced shape and every check shape."""
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
    save_file(samples, os.path.join(staging, SAMPLE_FILE), metadata=metadata)
    save_file(references, os.path.join(staging, REFERENCE_FILE), metadata=metadata)
    return cases


# ---------------------------------------------------------------------------------------------------------------
# The op


def export(job: Job, progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Run the whole export job; returns the `result.data` of the protocol."""
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
            eager_outputs = run_eager(wrapper, example)
            traced, tracer_warnings = trace_module(wrapper, example, job.trace.strict, job.target.hardware)
            traced = optimize(traced, job.target.optimize)
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
        with stages.stage("serialize"):
            os.makedirs(job.staging_dir, exist_ok=True)
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
            cases = write_reference(job.staging_dir, built, eager_outputs, wrapper, job, device)
    return {
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
