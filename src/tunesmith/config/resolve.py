"""The resolved config: every value a run derives, filled in by one function, never by mutation.

A user's config leaves some values to the run: ``"auto"`` hyperparameters (:mod:`.auto`),
``preference.beta: auto``, the device and precision, CPU's default forward-pass size, what a
quantised base was loaded as, the modules ``adapter.targets: all-linear`` means for this
model and the warm-up the schedule uses. :func:`resolve` is the only place those rules live:
it takes the loaded config and the :class:`RunFacts` measured so far and returns a *new*
frozen :class:`RunConfig` with them filled in. The input is never changed, and what the run
saves as ``config.resolved.yaml`` is ``resolve(config, facts)`` with every fact known.

Facts arrive in the order a run learns them (:func:`tunesmith.run.prepare`): the device
before the data is read, the number of training sequences after, the quantisation and the
model's linear modules once it is loaded, the warm-up once the trainer has counted its steps.
A fact still unknown (None) leaves its values as written, so each stage gets the config
resolved as far as it can be.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .auto import auto_values
from .registry import method_loss
from .schema import RunConfig

DEFAULT_BETA = 0.1
"""``preference.beta: auto`` (the DPO paper's and TRL's default)."""

CPU_TOKENS_PER_FORWARD = 1024
"""``train.max_tokens_per_forward`` on CPU when unset: measured on the bench workload
(bench/README.md), 1k-token passes run as fast per token as 4k ones on CPU and need a third
of the activation memory."""


@dataclass(frozen=True)
class RunFacts:
    """What a run has measured that its config leaves open (None: not known yet)."""

    device: str
    """Device type the run trains on: ``cpu`` or ``cuda``."""
    dtype: str
    """Precision name (``train.dtype``'s values), ``auto`` resolved for the device."""
    n_train: int | None = None
    """Training sequences after rendering: what ``"auto"`` hyperparameters are chosen for."""
    quant_bits: int | None = None
    """4 or 8 when the base model was loaded quantised."""
    quant_compute_dtype: str | None = None
    """The dtype quantised weights are dequantised to, by name."""
    linear_modules: tuple[str, ...] | None = None
    """The model's linear projections: what ``adapter.targets: all-linear`` means for it."""
    warmup_steps: int | None = None
    """The trainer's warm-up when ``train.warmup_steps`` is unset (``warmup_ratio`` of its steps)."""
    heap: str | None = None
    """``train.heap`` as the run applied it (fast or compact; see models.memory.choose_heap)."""


def resolve(config: RunConfig, facts: RunFacts) -> RunConfig:
    """``config`` with every derived value filled in from ``facts`` (see the module docstring),
    as a new frozen value; ``config`` itself is unchanged."""
    t, a, m = config.train, config.adapter, config.model
    train = {"device": facts.device, "dtype": facts.dtype}
    if t.max_tokens_per_forward is None and facts.device == "cpu":
        train["max_tokens_per_forward"] = CPU_TOKENS_PER_FORWARD
    if facts.n_train is not None:
        train.update(auto_values(t, a.type, facts.n_train))
    if t.warmup_steps is None and facts.warmup_steps is not None:
        train["warmup_steps"] = facts.warmup_steps
    if facts.heap is not None:
        train["heap"] = facts.heap
    adapter = {}
    if a.type != "none" and a.targets == "all-linear" and facts.linear_modules is not None:
        adapter["targets"] = list(facts.linear_modules)
    model = {}
    if facts.quant_bits is not None:  # qlora implies 4 bits; the compute dtype was auto
        model = {
            "load_in_4bit": facts.quant_bits == 4,
            "load_in_8bit": facts.quant_bits == 8,
            "compute_dtype": facts.quant_compute_dtype,
        }
    preference = {}
    loss = method_loss(config)
    if config.preference.beta == "auto" and loss is not None and "beta" in loss.params:
        preference["beta"] = DEFAULT_BETA
    return replace(
        config,
        train=replace(t, **train),
        adapter=replace(a, **adapter),
        model=replace(m, **model),
        preference=replace(config.preference, **preference),
    )
