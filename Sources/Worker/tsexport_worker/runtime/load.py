"""The load stage: the transformers class by name, the config, a random or pretrained model, and the untying that
torchscript: true promises.

Imported only once the runtime is known to have torch and transformers.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from ..errors import WorkerError, describe, traceback_tail
from ..protocol import ModelSpec
from . import probe
from .dtypes import MODEL_DTYPES

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass
class LoadedModel:
    model: torch.nn.Module
    warnings: list[dict[str, Any]] = field(default_factory=list)
    adjusted_config: dict[str, Any] = field(default_factory=dict)
    untied_parameters: list[str] = field(default_factory=list)
    # library sentence-transformers: the pipeline's module types, in modules.json's order.
    pipeline_modules: list[str] | None = None


def model_class(model: torch.nn.Module) -> str:
    """The class the record names: the model's, or for a sentence-transformers pipeline its Transformer module's."""
    inner = getattr(model, "pipeline", None)
    if inner is not None and type(model).__name__ == "SentenceTransformerPipeline":
        from .st_pipeline import transformer_model

        return type(transformer_model(inner)).__name__
    return type(model).__name__


def _model_class_names(transformers: Any) -> list[str]:
    return [n for n in dir(transformers) if n[:1].isupper() and (n.endswith("Model") or "Model" in n or "For" in n)]


def resolve_class(name: str) -> tuple[type, bool]:
    """The transformers class called `name` and whether it is an Auto* class; `unknown_class` otherwise."""
    transformers = probe.import_transformers()
    # transformers exports no public base class of its Auto* classes: the private one tells an Auto class apart.
    from transformers.models.auto.auto_factory import _BaseAutoModelClass  # noqa: PLC2701 - see above

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


def config_class_keys(class_name: str) -> dict[str, Any]:
    """The `config_keys` op: the keys the config class of model class `class_name` defines, read from the class alone
    (no weights, no model). An Auto* class has no config class of its own: `config_class` and `keys` are null."""
    cls, is_auto = resolve_class(class_name)
    if is_auto:
        return {"class": class_name, "config_class": None, "keys": None}
    config_class = cls.config_class  # type: ignore[attr-defined]
    try:
        known = known_config_keys(config_class())
    except Exception:  # noqa: BLE001 - a config class that needs arguments: judge by its class attributes
        known = known_config_keys(config_class)
    keys = sorted(k for k in known if not k.startswith("__"))
    return {"class": class_name, "config_class": config_class.__name__, "keys": keys}


def unknown_key_warnings(keys: list[str], known: set[str], config_name: str) -> list[dict[str, Any]]:
    """A warning per config key the config class does not declare: the config stores it as an attribute, and only a
    model that reads that attribute uses it."""
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
                "message": f"config key {key!r} is not declared by {config_name}: it is passed to the config, which "
                f"stores it as an attribute, so only a model that reads {key!r} uses it{hint}",
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
    # A nested decoder config (T5Gemma's, which sets its use_cache itself) follows the model's setting.
    decoder: Any = getattr(config, "decoder", None)
    if not getattr(config, "use_cache", False) and getattr(decoder, "use_cache", None) and hasattr(decoder, "to_dict"):
        decoder.use_cache = False
        adjusted["decoder.use_cache"] = False
    return adjusted


def attention_kwargs(spec: ModelSpec) -> dict[str, str]:
    """`attn_implementation` for the config or from_pretrained; the job's field, which `config` may not contradict."""
    in_config = spec.config.get("attn_implementation")
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
    except Exception as exc:  # TypeError, ValueError, strict dataclass validation errors
        error = attention_error(exc) or bad_config(exc, spec.config, f"{config_class.__name__} rejected the config")
        raise error from exc
    if spec.torchscript:
        loaded.adjusted_config = _adjust_for_torchscript(config, spec)
    torch.manual_seed(spec.seed)
    try:
        model = cls(config)
    except Exception as exc:
        raise attention_error(exc) or bad_config(exc, spec.config, f"{cls.__name__} could not be built") from exc
    moved: torch.nn.Module = model.to(MODEL_DTYPES[spec.dtype])
    return moved


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
    except Exception as exc:
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
        except Exception as exc:
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
    except Exception as exc:
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
    """The model of the job, in eval mode, untied when torchscript is true. With library sentence-transformers it is
    the folder's pipeline (st_pipeline.py), whose inner transformers model is untied."""
    loaded = LoadedModel(model=torch.nn.Module())
    if spec.library == "sentence-transformers":
        from .st_pipeline import load_pipeline, transformer_model

        pipeline, modules = load_pipeline(spec)
        if spec.torchscript:
            loaded.untied_parameters = untie_weights(transformer_model(cast(Any, pipeline).pipeline))
        loaded.model = pipeline
        loaded.pipeline_modules = modules
        return loaded
    cls, is_auto = resolve_class(spec.class_name)
    if spec.pretrained is None:
        model = _random_init(cls, is_auto, spec, loaded)
    else:
        model = _from_pretrained(cls, is_auto, spec, loaded)
    model.eval()
    if spec.torchscript:
        loaded.untied_parameters = untie_weights(model)
    loaded.model = model
    return loaded
