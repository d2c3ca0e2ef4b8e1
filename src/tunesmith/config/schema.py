"""The typed run configuration: one dataclass per YAML section.

Every field documented here is the documentation of the config file; ``tunesmith config
--defaults`` prints these with their defaults. Values are validated by :mod:`.load`; derived
values (e.g. the resolved device and dtype) are filled in by :func:`tunesmith.config.resolve`
and saved with the run, never silently rewritten in the user's file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union


@dataclass
class ModelConfig:
    """Which model to fine-tune. ``model: PATH`` in YAML is shorthand for ``model: {path: PATH}``."""

    path: str = ""
    """Local Hugging Face model folder (or a hub id where the network allows)."""
    tokenizer: str | None = None
    """Tokenizer folder when it differs from ``path``."""
    chat_template: str | None = None
    """A ``.jinja`` file replacing the tokenizer's chat template (saved with the result)."""
    attn_implementation: str = "auto"
    """auto (tunesmith's padding-free varlen attention for training) | sdpa | eager."""
    trust_remote_code: bool = False
    """Never enabled implicitly; only from the operator's own config file."""


@dataclass
class DataConfig:
    """Where the examples come from and how they are turned into tokens."""

    train: Union[str, list[str]] = ""
    """Training file(s): .jsonl / .json / .csv / .parquet / .txt."""
    eval: Union[str, list[str], None] = None
    """Held-out file(s). When absent, ``eval_fraction`` of train is split off."""
    eval_fraction: float = 0.05
    """Fraction of the training examples held out when ``eval`` is not given (0 disables)."""
    train_on_all_tokens: bool = False
    """Supervise every token (prompts included) instead of assistant turns only."""
    max_eval_examples: int | None = None
    """Cap on the held-out examples scored at each evaluation."""


@dataclass
class AdapterConfig:
    """Parameter-efficient adapter (PEFT LoRA / DoRA) or full fine-tuning (``type: none``)."""

    type: Literal["lora", "dora", "none"] = "lora"
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: Union[str, list[str]] = "all-linear"
    """``all-linear`` (every linear projection except the LM head) or module names."""
    rslora: bool = False
    """Rank-stabilised LoRA scaling alpha/sqrt(r) instead of alpha/r."""
    modules_to_save: list[str] = field(default_factory=list)
    """Extra modules trained in full and saved with the adapter (e.g. ``lm_head``)."""


@dataclass
class TrainConfig:
    """The optimisation loop."""

    epochs: Union[float, Literal["auto"]] = 1.0
    """Passes over the data; ``auto``: see tunesmith.config.auto (OpenAI's 3-epoch heuristic)."""
    max_steps: int | None = None
    """Optimizer steps; overrides ``epochs`` when set."""
    lr: Union[float, Literal["auto"]] = 2.0e-4
    """Peak learning rate; ``auto``: 2e-4 for adapters, 2e-5 for full fine-tuning."""
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1.0e-8
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int | None = None
    """Linear warm-up steps; default: ``warmup_ratio`` of the total steps."""
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of ``lr`` for cosine / linear decay."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm (null disables)."""
    batch_size: Union[int, Literal["auto"]] = 8
    """Micro-batch: rows (packing) or examples (no packing) per step; ``auto``: ~0.2 % of the
    examples, clamped to [1, 32]."""
    grad_accum: int = 1
    max_tokens_per_forward: int | None = None
    """Split each micro-batch at example boundaries into forward passes of at most this many
    tokens (same gradients: the loss is token-normalised over the whole window). Bounds
    activation memory at no cost in speed on CPUs. Default: 1024 on CPU, unlimited on CUDA."""
    max_length: int = 1024
    packing: bool = True
    """Best-fit pack several examples into each row of ``max_length`` tokens."""
    seed: int = 0
    save_every: int = 50
    """Checkpoint every N optimizer steps (0: only at the end)."""
    keep_last: int = 2
    """Checkpoints kept on disk (older ones are deleted)."""
    eval_every: int = 50
    """Held-out loss every N optimizer steps (0: only at the end)."""
    eval_at_start: bool = False
    """Also evaluate the untrained model first (logged as step 0): the baseline to beat."""
    log_every: int = 1
    gradient_checkpointing: bool = False
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 autocast on CUDA with bf16 support, fp32 on CPU (bf16 is slower on CPUs without AMX)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = None
    """torch intra-op threads on CPU (default: torch's choice)."""
    loss_chunk_size: int = 1024
    """Supervised positions per LM-head/loss chunk (bounds the logits memory)."""
    tensorboard: bool = False
    """Also log to OUTPUT_DIR/tensorboard when the tensorboard package is installed."""
    progress: Literal["auto", "bar", "lines", "none"] = "auto"
    """auto: a live bar on a terminal, plain log lines otherwise."""


@dataclass
class RunConfig:
    """A whole run. Sections: model, data, adapter, train; plus method and output_dir."""

    model: ModelConfig = field(default_factory=ModelConfig)
    method: Literal["sft", "pretrain", "dpo", "kto", "reward", "grpo", "distill"] = "sft"
    """sft | pretrain | dpo (the DPO family, see ``preference``) | kto | reward | grpo | distill."""
    data: DataConfig = field(default_factory=DataConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/run"
