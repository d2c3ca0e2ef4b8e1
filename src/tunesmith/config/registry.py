"""The one registry of training methods and preference losses: what each *declares*.

This module is declarative and torch-free, so that the bottom layer (``config/`` validates a
run, ``data/`` checks and reads files) can read it without importing an implementation. The
implementations are found from here by the methods layer: a method's code is the module
``tunesmith.methods.<module>`` (:func:`tunesmith.methods.get_method`), a preference loss named
``N`` is the function ``tunesmith.losses.preference.N_loss`` (:func:`tunesmith.methods.
preference.loss_function`). docs/contributing.md has the recipes for adding either.

What a method declares (:class:`MethodSpec`): its data formats (``data check``, the readers and
their "train it with method …" hints read them), the config sections it reads (each section's
torch-free checks run in :func:`tunesmith.config.validate`; checks that need heavier imports
are the method module's own ``validate_config``), and its losses — which decide whether it
needs a reference model (:func:`needs_reference`, the only place that answers that).
"""

from __future__ import annotations

from dataclasses import dataclass

# The names of the data formats (row shapes), declared here with the methods that accept them;
# :mod:`tunesmith.data.formats` detects, labels and normalises them.
OPENAI_CHAT, SHAREGPT, ALPACA = "openai_chat", "sharegpt", "alpaca"
PROMPT_COMPLETION, TEXT, PROMPT_ONLY = "prompt_completion", "text", "prompt_only"
OPENAI_PREFERENCE, PREFERENCE_PAIRS, KTO = "openai_preference", "preference_pairs", "kto"


@dataclass(frozen=True)
class LossSpec:
    """A preference loss: its name (``preference.loss``), the method that trains with it,
    whether it compares the policy with a reference model, and the ``preference.*`` keys it
    reads — the keyword arguments of its function, besides the log-probabilities."""

    name: str
    method: str
    needs_reference: bool
    params: tuple[str, ...]


@dataclass(frozen=True)
class MethodSpec:
    """A training method (``method:``).

    ``formats``: the data formats its files may hold (names from :mod:`tunesmith.data.formats`);
    the first is assumed where a row has no known shape. ``needs``: the sentence a wrong-format
    error ends with. ``sections``: the config sections it reads beyond model/data/adapter/train.
    ``losses``: its preference losses (those of :data:`LOSSES` naming it); with several,
    ``preference.loss`` picks one (the first is the default). ``checked``: ``tunesmith data check --method`` knows it (its token estimate).
    """

    name: str
    module: str
    formats: tuple[str, ...]
    needs: str
    sections: tuple[str, ...] = ()
    losses: tuple[str, ...] = ()
    checked: bool = False


_SFT_FORMATS = (OPENAI_CHAT, SHAREGPT, ALPACA, PROMPT_COMPLETION, TEXT)
_PAIR_FORMATS = (OPENAI_PREFERENCE, PREFERENCE_PAIRS)
_PAIRS_NEEDED = (
    "preference methods need prompt/chosen/rejected or OpenAI preference "
    "(input/preferred_output/non_preferred_output) rows"
)

LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec("sigmoid", "dpo", True, ("beta", "label_smoothing")),
        LossSpec("ipo", "dpo", True, ("beta", "length_normalize")),
        LossSpec("hinge", "dpo", True, ("beta",)),
        LossSpec("robust", "dpo", True, ("beta", "label_smoothing")),
        LossSpec("simpo", "dpo", False, ("beta", "gamma")),
        LossSpec("orpo", "dpo", False, ("beta",)),
        LossSpec("apo_zero", "dpo", True, ("beta",)),
        LossSpec("kto", "kto", True, ("beta", "desirable_weight", "undesirable_weight")),
    )
}


def _losses_of(method: str) -> tuple[str, ...]:
    return tuple(name for name, spec in LOSSES.items() if spec.method == method)


# In this order: a format's suggested method is the first one that accepts it.
METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "sft",
            "sft",
            _SFT_FORMATS,
            "SFT needs OpenAI chat, ShareGPT, Alpaca, prompt/completion or text rows",
            checked=True,
        ),
        MethodSpec(
            "pretrain", "sft", (TEXT,), 'continued pretraining needs {"text": ...} rows or a .txt file'
        ),
        MethodSpec(
            "dpo",
            "preference",
            _PAIR_FORMATS,
            _PAIRS_NEEDED,
            ("preference",),
            _losses_of("dpo"),
            checked=True,
        ),
        MethodSpec(
            "kto",
            "kto",
            (KTO, *_PAIR_FORMATS),
            "KTO needs prompt/completion/label rows (or preference pairs)",
            ("preference",),
            _losses_of("kto"),
            checked=True,
        ),
        MethodSpec("reward", "reward", _PAIR_FORMATS, _PAIRS_NEEDED, ("preference",)),
        MethodSpec(
            "grpo",
            "grpo",
            (PROMPT_ONLY,),
            'grpo needs prompt-only rows like {"prompt": ..., "answer": ...}',
            ("grpo",),
            checked=True,
        ),
        MethodSpec(
            "distill",
            "distill",
            _SFT_FORMATS,
            "distillation needs OpenAI chat, ShareGPT, Alpaca, prompt/completion or text rows",
            ("distill",),
        ),
    )
}

METHOD_NAMES = tuple(METHODS)
PAIR_LOSS_NAMES = METHODS["dpo"].losses
"""The values of ``preference.loss`` (the losses ``method: dpo`` chooses from)."""


def method_spec(name: str) -> MethodSpec:
    """The spec of ``method: name``; ``ValueError`` naming the known methods otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}") from None


def method_loss(config) -> LossSpec | None:
    """The preference loss a run trains with: ``preference.loss`` where the method offers a
    choice, its only loss otherwise, None for methods without one (sft, reward, grpo …)."""
    losses = method_spec(config.method).losses
    if not losses:
        return None
    return LOSSES[config.preference.loss if len(losses) > 1 else losses[0]]


def needs_reference(config) -> bool:
    """Whether the run compares the policy with a reference model (its loss says so)."""
    loss = method_loss(config)
    return loss is not None and loss.needs_reference


def suggest_method(file_format: str) -> str:
    """The method to suggest for a file of ``file_format``: the first registered one accepting it."""
    return next((m.name for m in METHODS.values() if file_format in m.formats), "sft")
