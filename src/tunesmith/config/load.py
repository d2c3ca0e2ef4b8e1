"""YAML / dict -> :class:`RunConfig`, with type checks, did-you-mean and dotted overrides."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import keyword
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ..errors import ConfigError
from .registry import LOSSES, method_loss, method_spec, needs_reference
from .schema import ModelConfig, RunConfig, as_sources  # noqa: F401
from .trackers import check_trackers

_SHORTHANDS = {"model": "path"}  # `model: ./dir` means `model: {path: ./dir}`


def load_config(source: str | Path | dict | RunConfig, overrides: list[str] | None = None) -> RunConfig:
    """Build a validated :class:`RunConfig`.

    ``source`` is a YAML file path, an already-parsed mapping, or a RunConfig (returned as a
    copy with ``overrides`` applied). ``overrides`` are ``"dotted.key=value"`` strings whose
    value is parsed as YAML (``train.lr=1e-4``, ``data.train=[a.jsonl,b.jsonl]``).
    """
    where = "config"
    if isinstance(source, RunConfig):
        raw = dataclasses.asdict(source)
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)  # overrides edit nested sections: never the caller's
    else:
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    config = _build(RunConfig, raw, where)  # the file's own mistakes are blamed on the file ...
    for item in overrides or []:  # ... and each override's on that --set
        apply_override(raw, item)
        config = _build(RunConfig, raw, f"--set {item}")
    return config


def apply_override(raw: dict, item: str) -> None:
    """Apply one dotted ``section.key=value`` override (YAML-typed value) to the raw config mapping
    in place: the parser of ``tunesmith train --set`` and of the jobs service's ``--set``."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: an override must look like section.key=value")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if isinstance(child, str) and part in _SHORTHANDS and i == 0:
            child = {_SHORTHANDS[part]: child}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item}: '{'.'.join(parts[: i + 1])}' is not a section")
        node[part] = child
        node = child
    node[parts[-1]] = value


def _build(cls: type, raw: Any, where: str, prefix: str = ""):
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where}: '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {type(raw).__name__}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if keyword.iskeyword(key) and f"{key}_" in fields:
            key = f"{key}_"  # a keyword (``lambda``) names the field ``lambda_`` in Python
        if key not in fields:
            raise ConfigError(_unknown_key_message(where, dotted, key, [_yaml_key(f) for f in fields]))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if isinstance(value, str) and key in _SHORTHANDS:
                value = {_SHORTHANDS[key]: value}
            kwargs[key] = _build(hint, value if value is not None else {}, where, dotted + ".")
        else:
            kwargs[key] = _coerce(value, hint, where, dotted)
    return cls(**kwargs)


def _unknown_key_message(where: str, dotted: str, key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" Did you mean '{dotted[: -len(key)]}{close[0]}'?" if close else ""
    return f"{where}: unknown key '{dotted}'.{hint} Known keys here: {', '.join(sorted(known))}."


def _coerce(value: Any, hint: Any, where: str, dotted: str) -> Any:
    """Check ``value`` against the type ``hint``; return it (ints widened to float)."""
    if dataclasses.is_dataclass(hint):  # a section inside a list (e.g. grpo.rewards[0])
        return _build(hint, value, where, dotted + ".")
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        sections = [o for o in options if dataclasses.is_dataclass(o)]
        lists = [o for o in options if typing.get_origin(o) is list]
        # A mapping can only be the section, a list only the list type: coerce it as that, so
        # the error inside (an unknown key, a wrong type) is reported, not "is not a string or …".
        if isinstance(value, dict) and len(sections) == 1:
            return _build(sections[0], value, where, dotted + ".")
        if isinstance(value, list) and len(lists) == 1:
            return _coerce(value, lists[0], where, dotted)
        errors = []
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, where, dotted)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"{where}: '{dotted}' = {value!r} is not {_describe(hint)}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: '{dotted}' must be null")
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value in allowed:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint_text = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"{where}: '{dotted}' = {value!r} is not one of {', '.join(map(str, allowed))}.{hint_text}"
        )
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: '{dotted}' must be a list, got {value!r}")
        return [_coerce(v, item_type, where, f"{dotted}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_type, item_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{dotted}' must be a mapping, got {value!r}")
        return {
            _coerce(k, key_type, where, f"{dotted} key"): _coerce(v, item_type, where, f"{dotted}.{k}")
            for k, v in value.items()
        }
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "2e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - schema uses only the types above
        return value
    raise ConfigError(f"{where}: '{dotted}' = {value!r} must be {_describe(hint)}")


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(hint):
        return "a mapping of " + ", ".join(f.name for f in dataclasses.fields(hint))
    if hint is type(None):
        return "null"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def config_to_dict(config: RunConfig) -> dict:
    """Plain nested dict of a config (for YAML dumps and JSON metadata); a field named after a
    Python keyword (``lambda_``) appears under its YAML name (``lambda``)."""
    return _yaml_names(dataclasses.asdict(config))


def _yaml_key(name: str) -> str:
    return name[:-1] if name.endswith("_") and keyword.iskeyword(name[:-1]) else name


def _yaml_names(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    return {_yaml_key(k): _yaml_names(v) for k, v in node.items()}


def dump_config(config: RunConfig, path: str | Path) -> None:
    """Write the config as YAML (sections in schema order)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")


def validate(config: RunConfig) -> None:
    """Checks across fields that types alone cannot express, torch-free: the common sections,
    then those of the sections the method reads (its :class:`~.registry.MethodSpec`). A
    method's checks that need heavier imports (GRPO's graders) are its module's own
    ``validate_config``: :func:`tunesmith.methods.validate` runs both. ``"auto"`` values are
    checked once resolved (:mod:`.resolve`)."""
    _validate_rest(config)
    check_trackers(config.train)
    for section in method_spec(config.method).sections:
        _SECTION_CHECKS[section](config)


def _validate_train(t) -> None:
    if t.batch_size != "auto" and t.batch_size < 1:
        raise ConfigError(f"config: 'train.batch_size' must be >= 1, got {t.batch_size}")
    if t.epochs != "auto" and t.epochs <= 0 and t.max_steps is None:
        raise ConfigError("config: 'train.epochs' must be > 0 (or set train.max_steps)")
    if t.lr != "auto" and t.lr <= 0:
        raise ConfigError(f"config: 'train.lr' must be > 0, got {t.lr}")


def _validate_preference(config: RunConfig) -> None:
    pr = config.preference
    if pr.beta != "auto" and pr.beta <= 0:
        raise ConfigError(f"config: 'preference.beta' must be > 0 (or auto), got {pr.beta}")
    if not 0 <= pr.label_smoothing < 0.5:
        raise ConfigError(
            f"config: 'preference.label_smoothing' must be in [0, 0.5), got {pr.label_smoothing}"
        )
    if pr.desirable_weight <= 0 or pr.undesirable_weight <= 0:
        raise ConfigError("config: 'preference.desirable_weight' and 'undesirable_weight' must be > 0")
    if config.model.attn_implementation != "auto":
        # Pair rows keep the rejected answer from seeing the chosen one through tunesmith's
        # varlen attention; stock SDPA/eager would attend across the whole row.
        raise ConfigError(
            f"config: method {config.method} needs model.attn_implementation: auto "
            f"(got {config.model.attn_implementation!r})"
        )
    loss = method_loss(config)
    if pr.length_normalize and (loss is None or "length_normalize" not in loss.params):
        readers = [name for name, spec in LOSSES.items() if "length_normalize" in spec.params]
        raise ConfigError(
            f"config: 'preference.length_normalize' applies to loss {' or '.join(readers)}; "
            f"this run trains with {loss.name if loss else config.method}"
        )
    if loss is not None and not loss.needs_reference and pr.precompute_reference is True:
        raise ConfigError(
            f"config: preference.loss {pr.loss} uses no reference model, so "
            "'preference.precompute_reference: true' has nothing to compute"
        )
    if needs_reference(config) and config.adapter.init_from is not None and pr.precompute_reference is False:
        raise ConfigError(
            "config: 'preference.precompute_reference: false' with 'adapter.init_from': the "
            "reference must be the model training starts from (base + that adapter), which "
            "only the precomputed reference provides; use auto or true"
        )


def _validate_quantization(config: RunConfig) -> None:
    """QLoRA / k-bit base: one bit width, an adapter on top, a CUDA-only optimizer named as such."""
    m, a = config.model, config.adapter
    if m.load_in_4bit and m.load_in_8bit:
        raise ConfigError("config: 'model.load_in_4bit' and 'model.load_in_8bit' are exclusive; pick one")
    if a.type == "qlora" and m.load_in_8bit:
        raise ConfigError(
            "config: 'adapter.type: qlora' trains on a 4-bit base; drop "
            "'model.load_in_8bit' (or use adapter.type: lora with it)"
        )
    if a.type == "none" and (m.load_in_4bit or m.load_in_8bit):
        raise ConfigError(
            "config: a quantised base (model.load_in_4bit / load_in_8bit) is frozen; "
            "train an adapter on it (adapter.type: qlora, lora or dora), not 'none'"
        )
    if config.train.optimizer == "paged_adamw_8bit" and config.train.device == "cpu":
        raise ConfigError(
            "config: 'train.optimizer: paged_adamw_8bit' pages optimizer state through "
            "CUDA unified memory and needs a GPU; on CPU use 'adamw_8bit' or 'adamw'"
        )


def _validate_init_from(a) -> None:
    """``adapter.init_from`` names a safetensors PEFT LoRA/DoRA adapter of this section's shape
    (targets are compared once resolved, in models.adapters; ``all-linear`` depends on the model,
    and a regex or full module names can only be matched against it)."""
    import json

    where = f"config: 'adapter.init_from' {a.init_from}"
    if a.type == "none":
        raise ConfigError(
            "config: 'adapter.init_from' loads adapter weights; it needs adapter.type lora, "
            "dora or qlora, not 'none'"
        )
    folder = Path(a.init_from)
    if not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"{where} is not an adapter folder (no adapter_config.json)")
    if not (folder / "adapter_model.safetensors").is_file():
        raise ConfigError(
            f"{where} has no adapter_model.safetensors (adapters are loaded from safetensors only)"
        )
    try:
        saved = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: adapter_config.json is unreadable: {exc}") from None
    if saved.get("peft_type") != "LORA":
        raise ConfigError(
            f"{where} is a {saved.get('peft_type')} adapter; only LoRA/DoRA adapters can be loaded"
        )
    kind = "dora" if saved.get("use_dora") else "lora"
    pairs = [
        ("type", kind, "dora" if a.type == "dora" else "lora"),
        ("r", saved.get("r"), a.r),
        ("alpha", saved.get("lora_alpha"), a.alpha),
        ("rslora", bool(saved.get("use_rslora")), a.rslora),
    ]
    saved_layers = saved.get("layers_to_transform")
    pairs.append(
        ("top_layers", len(saved_layers) if isinstance(saved_layers, list) else saved_layers, a.top_layers)
    )
    got = saved.get("target_modules")
    # A regex (PEFT's string form) or full module names (``model.layers.0.self_attn.q_proj``),
    # as the Tinker API's checkpoints save them, are compared with the model in hand, by the
    # modules they select (models.adapters).
    by_model = isinstance(got, str) or (isinstance(got, list) and any("." in t for t in got))
    if a.targets != "all-linear" and not by_model:
        want = [a.targets] if isinstance(a.targets, str) else list(a.targets)
        pairs.append(("targets", sorted(got) if isinstance(got, list) else got, sorted(want)))
    for name, got, want in pairs:
        if got != want:
            raise ConfigError(
                f"{where} was trained with {name}={got!r} but adapter.{name} is {want!r}: "
                "the adapter must have the same shape to load its weights"
            )


def _validate_data(d) -> None:
    """Sources: a path each; weights > 0 on every source of a list or on none (what a weight
    means: tunesmith.data.sources); column renames from non-empty names; ``mix_size`` with weights."""
    if not as_sources(d.train):
        raise ConfigError("config: 'data.train' is required (a training data file)")
    for key in ("train", "eval"):
        items = as_sources(getattr(d, key))
        for i, s in enumerate(items):
            at = f"data.{key}[{i}]" if isinstance(getattr(d, key), list) else f"data.{key}"
            if not s.path:
                raise ConfigError(f"config: '{at}.path' is required (a data file or save_to_disk folder)")
            if s.weight is not None and not (math.isfinite(s.weight) and s.weight > 0):
                raise ConfigError(f"config: '{at}.weight' must be a number > 0, got {s.weight}")
            for target, column in s.columns.items():
                if not target or not column:
                    raise ConfigError(
                        f"config: '{at}.columns' maps field names to column names; got {target!r}: {column!r}"
                    )
        given = [s.weight is not None for s in items]
        if any(given) and not all(given):
            i = given.index(False)
            raise ConfigError(
                f"config: 'data.{key}[{i}]' ({items[i].path}) has no weight while other sources have "
                "one: give every source a weight (its share of the mixture), or none to concatenate them"
            )
    if d.mix_size is not None:
        if d.mix_size < 1:
            raise ConfigError(f"config: 'data.mix_size' must be >= 1, got {d.mix_size}")
        if not any(s.weight is not None for s in as_sources(d.train)):
            raise ConfigError(
                "config: 'data.mix_size' sizes a weighted mixture; give data.train's sources weights"
            )


def _validate_stopping(config: RunConfig) -> None:
    """``train.early_stopping`` / ``keep_best`` read eval losses: they need held-out data (an
    eval source or eval_fraction > 0); early stopping needs evaluations during training, and
    under GRPO with μ > 1 its checkpoints must fall on rollout boundaries."""
    t, es = config.train, config.train.early_stopping
    if es is not None and (es.patience < 1 or es.min_delta < 0):
        raise ConfigError(
            "config: 'train.early_stopping.patience' must be >= 1 and 'min_delta' >= 0, "
            f"got {es.patience} and {es.min_delta}"
        )
    asked = [name for name, on in (("early_stopping", es is not None), ("keep_best", t.keep_best)) if on]
    if not asked:
        return
    if not as_sources(config.data.eval) and config.data.eval_fraction == 0:
        raise ConfigError(
            f"config: 'train.{asked[0]}' compares eval losses, but there is no held-out data: "
            "set data.eval or data.eval_fraction > 0"
        )
    if es is not None and t.eval_every == 0:
        raise ConfigError(
            "config: 'train.early_stopping' needs evaluations during training: set train.eval_every > 0"
        )
    mu = config.grpo.iterations
    if config.method == "grpo" and mu > 1 and t.eval_every % mu:
        raise ConfigError(
            f"config: 'train.{asked[0]}' writes a checkpoint at evaluations, so 'train.eval_every' "
            f"({t.eval_every}) must be a multiple of 'grpo.iterations' ({mu})"
        )


def _validate_chat_template(value: str | None) -> None:
    """A bare word is a template name and must be a shipped one (a path is checked at load)."""
    from ..models.named_templates import TEMPLATES, is_template_name, unknown_name_message

    if value and value not in TEMPLATES and is_template_name(value) and not Path(value).is_file():
        raise ConfigError(f"config: {unknown_name_message(value)}")


def _validate_rest(config: RunConfig) -> None:
    t, a = config.train, config.adapter
    if not config.model.path:
        raise ConfigError(
            "config: 'model' is required (a local Hugging Face model folder, a .gguf file or a Hub id)"
        )
    _validate_chat_template(config.model.chat_template)
    _validate_data(config.data)
    _validate_stopping(config)
    positive = {
        "train.grad_accum": t.grad_accum,
        "train.max_length": t.max_length,
        "train.log_every": t.log_every,
        "train.loss_chunk_size": t.loss_chunk_size,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"config: '{key}' must be >= 1, got {value}")
    _validate_train(t)
    if t.max_steps is not None and t.max_steps < 1:
        raise ConfigError(f"config: 'train.max_steps' must be >= 1, got {t.max_steps}")
    if t.profile_steps < 0:
        raise ConfigError(f"config: 'train.profile_steps' must be >= 0, got {t.profile_steps}")
    if not 0 <= config.data.eval_fraction < 1:
        raise ConfigError("config: 'data.eval_fraction' must be in [0, 1)")
    if a.type != "none" and (a.r < 1 or a.alpha <= 0):
        raise ConfigError("config: 'adapter.r' must be >= 1 and 'adapter.alpha' > 0")
    if not 0 <= a.dropout < 1:
        raise ConfigError("config: 'adapter.dropout' must be in [0, 1)")
    if a.top_layers is not None and (a.type == "none" or a.top_layers < 1):
        raise ConfigError(
            "config: 'adapter.top_layers' must be >= 1 and needs an adapter "
            f"(type lora, dora or qlora); got {a.top_layers} with type {a.type}"
        )
    if a.init_from is not None:
        _validate_init_from(a)
    _validate_quantization(config)
    if config.model.attention_kernel != "auto" and config.model.attn_implementation != "auto":
        raise ConfigError(
            f"config: 'model.attention_kernel: {config.model.attention_kernel}' picks the kernel of "
            "tunesmith's varlen attention, which needs model.attn_implementation: auto "
            f"(got {config.model.attn_implementation!r})"
        )
    if t.eval_generate < 0:
        raise ConfigError(f"config: 'train.eval_generate' must be >= 0, got {t.eval_generate}")
    if t.eval_generate and config.method != "sft":
        raise ConfigError(
            "config: 'train.eval_generate' needs method sft (prompts with reference "
            f"answers); this run is {config.method}"
        )
    if t.save_every < 0 or t.eval_every < 0 or t.keep_last < 1:
        raise ConfigError("config: 'train.save_every'/'eval_every' must be >= 0 and 'keep_last' >= 1")
    if t.cpu_offload and (t.parallel != "fsdp" or t.device == "cpu"):
        raise ConfigError(
            "config: 'train.cpu_offload' offloads FSDP shards from the GPU; it needs "
            "train.parallel: fsdp on a CUDA device"
        )
    if t.parallel == "fsdp" and (a.type == "qlora" or config.model.load_in_4bit or config.model.load_in_8bit):
        raise ConfigError(
            "config: train.parallel fsdp cannot shard bitsandbytes-quantised weights "
            "(QLoRA / load_in_4bit / load_in_8bit): bitsandbytes does not support FSDP2. "
            "Use train.parallel: ddp (each GPU holds the quantised model)."
        )


_GRPO_REWARD_NEEDS = {"regex": "pattern", "python": "function", "reward_model": "model", "grader": "grader"}


def _refuse_sampling_under_fsdp(config: RunConfig) -> None:
    if config.train.parallel == "fsdp":
        raise ConfigError(
            f"config: method {config.method} samples from the model inside the training "
            "step; under train.parallel fsdp every rank would have to generate the same "
            "number of tokens (each block's weights are all-gathered per forward). "
            "Use train.parallel: ddp."
        )


def _validate_grpo(config: RunConfig) -> None:
    g = config.grpo
    _refuse_sampling_under_fsdp(config)
    if g.group_size < 2:
        raise ConfigError(
            f"config: 'grpo.group_size' must be >= 2 (advantages compare samples "
            f"of one prompt), got {g.group_size}"
        )
    if g.max_new_tokens < 1 or g.max_new_tokens >= config.train.max_length:
        raise ConfigError(
            "config: 'grpo.max_new_tokens' must be >= 1 and below 'train.max_length' "
            f"(room for the prompt), got {g.max_new_tokens}"
        )
    if g.temperature <= 0 or not 0 < g.top_p <= 1:
        raise ConfigError("config: 'grpo.temperature' must be > 0 and 'grpo.top_p' in (0, 1]")
    if g.epsilon <= 0 or (g.epsilon_high is not None and g.epsilon_high <= 0) or g.beta < 0:
        raise ConfigError("config: 'grpo.epsilon' and 'grpo.epsilon_high' must be > 0, 'grpo.beta' >= 0")
    if g.beta > 0 and config.adapter.type == "none":
        raise ConfigError(
            "config: 'grpo.beta' > 0 needs an adapter (the reference policy is the "
            "base model with adapters disabled; full fine-tuning has none)"
        )
    _validate_grpo_iterations(g.iterations, config.train)
    if not g.rewards:
        raise ConfigError(
            "config: 'grpo.rewards' is required: a list of reward functions, e.g. "
            "[{type: exact_match, field: answer}]"
        )
    for i, r in enumerate(g.rewards):
        need = _GRPO_REWARD_NEEDS.get(r.type)
        if need and not getattr(r, need):
            raise ConfigError(f"config: 'grpo.rewards[{i}].{need}' is required for type {r.type}")


def _validate_grpo_iterations(mu: int, t) -> None:
    """μ > 1 keeps each rollout in memory for μ steps and never checkpoints it, so every
    checkpoint must fall on a rollout boundary for a resumed run to equal the uninterrupted one
    (evaluation samples with its own seeded RNG and leaves the rollouts alone: any eval_every)."""
    if mu < 1:
        raise ConfigError(f"config: 'grpo.iterations' must be >= 1 (optimizer steps per rollout), got {mu}")
    for key, value in (("save_every", t.save_every), ("max_steps", t.max_steps)):
        if value and value % mu:
            raise ConfigError(
                f"config: 'train.{key}' ({value}) must be a multiple of 'grpo.iterations' "
                f"({mu}): each rollout is used for {mu} optimizer steps and is not saved "
                "in checkpoints, so a checkpoint must fall where a new rollout starts"
            )


def _validate_distill(config: RunConfig) -> None:
    d = config.distill
    if d.mode == "on_policy":
        _refuse_sampling_under_fsdp(config)
    if not d.teacher:
        raise ConfigError("config: 'distill.teacher' is required for method distill (a model folder)")
    for key, value in (("alpha", d.alpha), ("beta", d.beta), ("lambda", d.lambda_)):
        if not 0 <= value <= 1:
            raise ConfigError(f"config: 'distill.{key}' must be in [0, 1], got {value}")
    if d.alpha == 1:
        raise ConfigError("config: 'distill.alpha' = 1 ignores the teacher entirely; use method: sft")
    if d.temperature <= 0 or d.sample_temperature < 0:
        raise ConfigError("config: 'distill.temperature' must be > 0 and 'distill.sample_temperature' >= 0")
    if d.max_new_tokens < 1 or (d.cache_top_k is not None and d.cache_top_k < 1):
        raise ConfigError("config: 'distill.max_new_tokens' and 'distill.cache_top_k' must be >= 1")
    if d.mode == "on_policy" and d.cache_top_k is not None:
        raise ConfigError(
            "config: 'distill.cache_top_k' needs distill.mode: logits (on-policy samples "
            "are new text, so the teacher must score them on the fly)"
        )


# The checks of each section a method may read (MethodSpec.sections).
_SECTION_CHECKS = {"preference": _validate_preference, "grpo": _validate_grpo, "distill": _validate_distill}

__all__ = ["load_config", "dump_config", "config_to_dict", "validate", "ModelConfig"]
