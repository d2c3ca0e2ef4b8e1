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
class Signal:
    """A method's progress metric: its key in ``metrics.jsonl`` (``eval_<key>`` at evaluations),
    a label with its unit, whether higher is better, and a short console name."""

    key: str
    label: str
    higher_is_better: bool
    short: str


@dataclass(frozen=True)
class MethodSpec:
    """A training method (``method:``).

    ``formats``: the data formats its files may hold (names from :mod:`tunesmith.data.formats`);
    the first is assumed where a row has no known shape. ``needs``: the sentence a wrong-format
    error ends with. ``sections``: the config sections it reads beyond model/data/adapter/train.
    ``losses``: its preference losses (those of :data:`LOSSES` naming it); with several,
    ``preference.loss`` picks one (the first is the default). ``checked``: ``tunesmith data check --method`` knows it (its token estimate).
    ``loss_label``: what its ``loss`` / ``eval_loss`` is, for reports and charts (``{loss}``: the
    run's ``preference.loss``; ``loss_is_progress``
    below: whether lower means better). ``signals``: the
    logged metrics that show its progress besides the loss (shown on the console next to the
    loss, charted and tabled in the run report with these labels, ``eval_<key>`` at evaluations).
    """

    name: str
    module: str
    formats: tuple[str, ...]
    needs: str
    sections: tuple[str, ...] = ()
    losses: tuple[str, ...] = ()
    checked: bool = False
    loss_label: str = "loss (nats/token)"
    signals: tuple[Signal, ...] = ()
    loss_is_progress: bool = True
    """False where a lower loss does not mean a better model (GRPO's policy objective moves with
    the advantages and the KL term); reports then give it no direction and point at the signals."""


_TOKEN_ACCURACY = Signal("accuracy", "token accuracy (argmax = target)", True, "acc")
_PAIR_SIGNALS = (
    Signal("accuracy", "pair accuracy (chosen reward > rejected)", True, "acc"),
    Signal("margin", "reward margin (chosen − rejected)", True, "margin"),
)


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
            signals=(_TOKEN_ACCURACY,),
        ),
        MethodSpec(
            "pretrain",
            "sft",
            (TEXT,),
            'continued pretraining needs {"text": ...} rows or a .txt file',
            signals=(_TOKEN_ACCURACY,),
        ),
        MethodSpec(
            "dpo",
            "preference",
            _PAIR_FORMATS,
            _PAIRS_NEEDED,
            ("preference",),
            _losses_of("dpo"),
            checked=True,
            loss_label="pair loss ({loss}, per pair)",
            signals=_PAIR_SIGNALS,
        ),
        MethodSpec(
            "kto",
            "kto",
            (KTO, *_PAIR_FORMATS),
            "KTO needs prompt/completion/label rows (or preference pairs)",
            ("preference",),
            _losses_of("kto"),
            checked=True,
            loss_label="KTO loss (per example)",
            signals=(
                Signal("accuracy", "accuracy (implicit reward on the label's side)", True, "acc"),
                Signal("kl", "KL estimate to the reference", False, "kl"),
            ),
        ),
        MethodSpec(
            "reward",
            "reward",
            _PAIR_FORMATS,
            _PAIRS_NEEDED,
            ("preference",),
            loss_label="Bradley–Terry loss (per pair)",
            signals=(
                Signal("accuracy", "pair accuracy (chosen score > rejected)", True, "acc"),
                Signal("margin", "score margin (chosen − rejected)", True, "margin"),
            ),
        ),
        MethodSpec(
            "grpo",
            "grpo",
            (PROMPT_ONLY,),
            'grpo needs prompt-only rows like {"prompt": ..., "answer": ...}',
            ("grpo",),
            checked=True,
            loss_label="policy loss (GRPO objective; not a progress measure)",
            loss_is_progress=False,
            signals=(
                Signal("reward", "mean reward of the sampled completions", True, "reward"),
                Signal("kl", "KL to the reference (per token)", False, "kl"),
            ),
        ),
        MethodSpec(
            "distill",
            "distill",
            _SFT_FORMATS,
            "distillation needs OpenAI chat, ShareGPT, Alpaca, prompt/completion or text rows",
            ("distill",),
            loss_label="distillation loss (per token)",
            signals=(
                Signal("divergence", "divergence to the teacher (per token)", False, "div"),
                Signal("agreement", "top-1 agreement with the teacher", True, "agree"),
            ),
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
