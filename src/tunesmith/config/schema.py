"""The typed run configuration: one dataclass per YAML section.

Every field documented here is the documentation of the config file; ``tunesmith config``
prints every key with its default. Values are validated by :mod:`.load`. Configs are frozen:
derived values (``"auto"`` hyperparameters, :mod:`.auto`; the device and dtype …) are filled in
by :func:`.resolve.resolve`, which returns a new config, saved with the run as
``config.resolved.yaml`` — never rewritten in the user's file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .registry import METHOD_NAMES, PAIR_LOSS_NAMES
from .trackers import TRACKER_NAMES


@dataclass(frozen=True)
class ModelConfig:
    """Which model to fine-tune. ``model: PATH`` in YAML is shorthand for ``model: {path: PATH}``."""

    path: str = ""
    """A local Hugging Face model folder, a ``.gguf`` file, or a Hugging Face Hub id
    (``Qwen/Qwen2.5-0.5B-Instruct``: fetched into the Hub cache where the network allows;
    offline, a cached copy loads)."""
    tokenizer: str | None = None
    """Tokenizer folder when it differs from ``path``."""
    chat_template: str | None = None
    """Replace the tokenizer's chat template (base models have none): a shipped template by name
    — chatml | qwen | llama3 | mistral | gemma | phi3 — or a ``.jinja`` file. Saved with the
    result (docs/training.md, "Chat templates")."""
    attn_implementation: str = "auto"
    """auto (tunesmith's padding-free varlen attention for training) | sdpa | eager."""
    attention_kernel: Literal["auto", "loop", "flex", "flash", "nested"] = "auto"
    """The kernel of tunesmith's varlen attention. auto: the per-example loop on CPU (the exact
    reference); on CUDA one kernel for the whole packed batch — FlashAttention varlen if the
    flash_attn package is installed, else FlexAttention (compiled), else nested-tensor SDPA
    (plain segments). loop | flex | flash | nested force one (docs/training.md, "Attention")."""
    trust_remote_code: bool = False
    """Never enabled implicitly; only from the operator's own config file."""
    load_in_4bit: bool = False
    """Quantise the base model's linear layers to 4 bits with bitsandbytes and train an adapter
    on top (QLoRA; implied by ``adapter.type: qlora``). See docs/qlora.md."""
    load_in_8bit: bool = False
    """Quantise them to 8 bits (LLM.int8()) instead."""
    quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type: nf4 (NormalFloat, Dettmers et al. 2023) | fp4."""
    double_quant: bool = True
    """Also quantise the 4-bit blocks' scale constants (about 0.4 bits/parameter less)."""
    compute_dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Dtype 4-bit weights are dequantised to for each matmul; auto: bf16 on CUDA, fp32 on CPU."""


@dataclass(frozen=True)
class DataSource:
    """One data source of ``data.train`` / ``data.eval`` written as a mapping (a plain string
    is a source with only a ``path``). See docs/data.md, "Several sources, weights, columns"."""

    path: str = ""
    """A data file (.jsonl / .json / .csv / .parquet / .txt) or a folder written by Hugging
    Face ``datasets``' ``save_to_disk`` (read with the ``datasets`` package: extra "datasets")."""
    weight: float | None = None
    """Mixing weight: this source's share of the mixture is weight / (sum of the weights);
    set on every source of the list or on none (none: the sources are concatenated)."""
    columns: dict[str, str] = field(default_factory=dict)
    """Field renames, ``{field tunesmith reads: column in this source}``, e.g.
    ``{messages: conversation}``; applied to the top-level fields of every row."""
    split: str | None = None
    """The split of a ``save_to_disk`` folder holding a DatasetDict (needed when it has several)."""

    def __str__(self) -> str:
        # Errors and example sources name the file, as for a plain path.
        return self.path

    @property
    def plain(self) -> bool:
        """Only a path: read exactly as the string ``path`` would be."""
        return self.weight is None and not self.columns and self.split is None


def as_sources(value: str | DataSource | list[str | DataSource] | None) -> list[DataSource]:
    """``data.train`` / ``data.eval`` as a list of :class:`DataSource` (a single path or
    source, a list of them, or None / "" for none)."""
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else [value]
    return [item if isinstance(item, DataSource) else DataSource(path=item) for item in items]


@dataclass(frozen=True)
class DataConfig:
    """Where the examples come from and how they are turned into tokens."""

    train: str | DataSource | list[str | DataSource] = ""
    """Training data: a file (.jsonl / .json / .csv / .parquet / .txt), a ``save_to_disk``
    folder, or a list of them; a list item may be a mapping ``{path, weight, columns, split}``
    (:class:`DataSource`) to mix sources by weight and rename fields."""
    eval: str | DataSource | list[str | DataSource] | None = None
    """Held-out data, as for ``train``. When absent, ``eval_fraction`` of train is split off."""
    mix_size: int | None = None
    """Examples in a weighted mixture (every epoch passes over it once); default: the sum of
    the sources' sizes. Only with weights."""
    eval_fraction: float = 0.05
    """Fraction of the training examples held out when ``eval`` is not given (0 disables)."""
    train_on_all_tokens: bool = False
    """Supervise every token (prompts included) instead of assistant turns only."""
    max_eval_examples: int | None = None
    """Cap on the held-out examples scored at each evaluation."""


@dataclass(frozen=True)
class AdapterConfig:
    """Parameter-efficient adapter (PEFT LoRA / DoRA) or full fine-tuning (``type: none``)."""

    type: Literal["lora", "dora", "qlora", "none"] = "lora"
    """lora | dora | qlora (LoRA on a 4-bit base: sets model.load_in_4bit) | none (full)."""
    r: int = 16
    """LoRA rank: the inner dimension of each adapter's two low-rank matrices."""
    alpha: float = 32.0
    """LoRA scaling numerator: the update is scaled by alpha/r (alpha/sqrt(r) with ``rslora``)."""
    dropout: float = 0.05
    """Dropout on the adapter's input during training."""
    targets: str | list[str] = "all-linear"
    """``all-linear`` (every linear projection except the LM head) or module names."""
    top_layers: int | None = None
    """Adapt only the top N transformer blocks (PEFT ``layers_to_transform``); null: all. The
    blocks below run forward only, with no backward pass and no stored activations, so a step
    is cheaper (SmolLM2-135M, top 20 of 30 blocks: 1.27x tokens/s) — at some cost in capacity."""
    rslora: bool = False
    """Rank-stabilised LoRA scaling alpha/sqrt(r) instead of alpha/r."""
    modules_to_save: list[str] = field(default_factory=list)
    """Extra modules trained in full and saved with the adapter (e.g. ``lm_head``)."""
    init_from: str | None = None
    """A PEFT adapter folder from an earlier run (``adapter_config.json`` +
    ``adapter_model.safetensors``, e.g. its ``final/``): its weights initialise the adapter
    instead of PEFT's fresh init (continued fine-tuning). Its type, r, alpha, rslora and
    targets must equal this section's."""


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop training when the held-out loss stops improving (``train.early_stopping``)."""

    patience: int = 3
    """Evaluations in a row without improvement after which training stops (>= 1)."""
    min_delta: float = 0.0
    """An eval loss improves on the best so far only when lower by more than this (>= 0)."""


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation loop."""

    epochs: float | Literal["auto"] = 1.0
    """Passes over the data; ``auto``: see tunesmith.config.auto (OpenAI's 3-epoch heuristic)."""
    max_steps: int | None = None
    """Optimizer steps; overrides ``epochs`` when set."""
    lr: float | Literal["auto"] = 2.0e-4
    """Peak learning rate; ``auto``: 2e-4 for adapters, 2e-5 for full fine-tuning."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    adam_beta1: float = 0.9
    """AdamW β1 (first-moment decay)."""
    adam_beta2: float = 0.999
    """AdamW β2 (second-moment decay)."""
    adam_eps: float = 1.0e-8
    """AdamW ε (added to the second-moment root)."""
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate schedule after warm-up: cosine | linear decay to ``min_lr_ratio`` · lr | constant."""
    warmup_steps: int | None = None
    """Linear warm-up steps; default: ``warmup_ratio`` of the total steps."""
    warmup_ratio: float = 0.03
    """Warm-up as a fraction of the total steps when ``warmup_steps`` is not set."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of ``lr`` for cosine / linear decay."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm (null disables)."""
    batch_size: int | Literal["auto"] = 8
    """Micro-batch: rows (packing) or examples (no packing) per step; ``auto``: ~0.2 % of the
    examples, clamped to [1, 32]."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (the batch is batch_size × grad_accum)."""
    max_tokens_per_forward: int | None = None
    """Split each micro-batch at example boundaries into forward passes of at most this many
    tokens (same gradients: the loss is token-normalised over the whole window). Bounds
    activation memory at no cost in speed on CPUs. Default: 1024 on CPU, unlimited on CUDA."""
    max_length: int = 1024
    """Most tokens per example (longer ones are truncated; ``tunesmith data check`` counts them)
    and per packed row."""
    packing: bool = True
    """Best-fit pack several examples into each row of ``max_length`` tokens."""
    seed: int = 0
    """Seed of the adapter init, data order and dropout: the same seed and data give the same run."""
    save_every: int = 50
    """Checkpoint every N optimizer steps (0: only at the end)."""
    keep_last: int = 2
    """Checkpoints kept on disk (older ones are deleted; with ``keep_best`` the best one is kept too)."""
    eval_every: int = 50
    """Held-out loss every N optimizer steps (0: only at the end)."""
    early_stopping: EarlyStoppingConfig | None = None
    """``{patience, min_delta}``: stop after ``patience`` evaluations in a row whose eval loss
    is not below the best so far by more than ``min_delta`` (a checkpoint is written where it
    stops; the step-0 baseline does not count). Needs held-out data and ``eval_every`` > 0.
    null: off. See docs/training.md, "Early stopping and the best checkpoint"."""
    keep_best: bool = False
    """Write the weights of the evaluation with the lowest eval loss as ``final/`` instead of
    the last step's (a checkpoint is written at each new best and kept through rotation)."""
    eval_at_start: bool = False
    """Also evaluate the untrained model first (logged as step 0): the baseline to beat."""
    eval_generate: int = 0
    """At each evaluation also answer the first N held-out prompts (greedy) and log generation
    metrics (exact match, token F1, ROUGE-L, keywords …) as eval_gen_*; method sft only."""
    log_every: int = 1
    """Log (and write metrics.jsonl rows) every N optimizer steps."""
    gradient_checkpointing: bool = False
    """Recompute each block's activations in the backward pass instead of storing them: less
    memory, about a third more compute."""
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw_8bit"] = "adamw"
    """adamw (torch) | adamw_8bit (bitsandbytes 8-bit states, CPU or CUDA) | paged_adamw_8bit
    (8-bit states in CUDA unified memory that pages out under pressure; CUDA only)."""
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 autocast on CUDA with bf16 support, fp32 on CPU (half precision is many times
    slower on CPUs without AMX: an explicit fp16 / bf16 on a CPU warns; on a CPU with AMX-BF16,
    bf16 trains LoRA faster: docs/training.md, "bf16 on a CPU")."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: cuda when a GPU is visible, else cpu."""
    threads: int | None = None
    """torch intra-op threads on CPU (default: torch's choice)."""
    heap: Literal["auto", "fast", "compact"] = "auto"
    """How the process's C heap treats large freed buffers (glibc; elsewhere ignored). fast: it
    keeps and reuses them — 1.2-1.4x faster CPU training steps measured, at a higher peak RSS
    (about 0.7x a pass's activations more; the estimate counts it). compact: it returns them to
    the OS at once — the lowest RSS, each buffer paid again in fresh pages. auto: compact for a
    quantised base, under gradient checkpointing (runs that chose memory) or when the fast
    estimate exceeds 80 % of the available memory, else fast.
    MALLOC_MMAP_THRESHOLD_ in the environment overrides both."""
    loss_chunk_size: int = 1024
    """Supervised positions per LM-head/loss chunk (bounds the logits memory)."""
    tensorboard: bool = False
    """Same as listing tensorboard in ``report_to`` (kept for older configs)."""
    report_to: list[Literal[TRACKER_NAMES]] = field(default_factory=list)
    """Experiment trackers (any of tensorboard, mlflow, wandb, trackio): each receives every
    metrics.jsonl row, the resolved config as parameters and, at the end, report.html and
    final/ as artefacts; only rank 0 reports. Each needs its package (pip install
    'tunesmith[trackers]'); see docs/training.md, "Experiment trackers"."""
    report_project: str | None = None
    """MLflow experiment / W&B and trackio project; default: $MLFLOW_EXPERIMENT_NAME (MLflow)
    or $WANDB_PROJECT (W&B) when set, else ``tunesmith``. Runs are named after output_dir."""
    profile_steps: int = 0
    """Profile optimizer steps 2 .. 1 + N (``tunesmith train --profile N``): where each step's
    time goes (attention, LoRA, base matmuls, LM head + loss, optimizer, data, overhead),
    printed and written to OUTPUT_DIR/profile.json. 0: off."""
    progress: Literal["auto", "bar", "lines", "none"] = "auto"
    """auto: a live bar on a terminal, plain log lines otherwise."""
    parallel: Literal["none", "ddp", "fsdp"] = "none"
    """Multi-process training under torchrun (``tunesmith train --nproc N``): ddp replicates
    the model on every process; fsdp (FSDP2) shards it per decoder block. The global batch is
    batch_size × grad_accum × processes. See docs/distributed.md."""
    cpu_offload: bool = False
    """fsdp on CUDA: keep parameter shards, gradients and optimizer state in CPU memory."""


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation (``method: distill``): a teacher model teaches the student ``model``.

    Loss per supervised token: ``alpha · CE(label) + (1 − alpha) · T² · D(teacher_T ‖ student_T)``
    (Hinton et al. 2015); see docs/distillation.md.
    """

    teacher: str = ""
    """Teacher model folder (a base or merged model, or a run directory holding an adapter)."""
    teacher_adapter: str | None = None
    """LoRA adapter applied over ``teacher`` (an adapter folder or an earlier run directory)."""
    mode: Literal["logits", "on_policy"] = "logits"
    """logits: match the teacher on the data's tokens; on_policy (GKD): a fraction ``lambda``
    of forward passes trains on completions sampled from the student, scored by the teacher."""
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    """forward_kl KL(teacher‖student) | reverse_kl KL(student‖teacher) | jsd (generalised
    Jensen–Shannon with weight ``beta``; beta→0 behaves as forward KL, beta→1 as reverse KL)."""
    alpha: float = 0.5
    """Weight of the cross-entropy on the data's labels; ``1 − alpha`` weighs the divergence."""
    beta: float = 0.5
    """JSD mixture weight: M = beta·teacher + (1 − beta)·student (GKD, Agarwal et al. 2024)."""
    temperature: float = 1.0
    """Softmax temperature T of both distributions in the divergence (scaled back by T²)."""
    lambda_: float = 0.5
    """on_policy: fraction of forward passes that use student samples (written ``lambda:``)."""
    max_new_tokens: int = 128
    """on_policy: most tokens the student samples per prompt."""
    sample_temperature: float = 1.0
    """on_policy: sampling temperature of the student's completions."""
    cache_top_k: int | None = None
    """Precompute the teacher's top-k log-probs once to disk (then the teacher is freed before
    the student loads); null computes teacher logits on the fly (full vocabulary)."""
    cache_dir: str | None = None
    """Where the top-k cache lives (default OUTPUT_DIR/teacher_cache); files are keyed by the
    teacher and data fingerprints, so runs sharing a folder reuse them."""
    teacher_device: str | None = None
    """Device of the on-the-fly teacher (e.g. cuda:1); default: the student's device."""
    teacher_load_in_4bit: bool = False
    """Load the teacher's linear layers in 4-bit NF4 (bitsandbytes; CPU or CUDA) to save memory."""


@dataclass(frozen=True)
class GrpoRewardConfig:
    """One reward function of a GRPO run (an item of ``grpo.rewards``); see docs/grpo.md.

    Only the keys of the chosen ``type`` are read; the others must stay unset.
    """

    type: Literal["exact_match", "regex", "json_schema", "length", "python", "reward_model", "grader"] = (
        "exact_match"
    )
    """exact_match: 1 if the answer equals the example's ``field`` | regex: 1 if ``pattern``
    matches | json_schema: 1 if the completion is JSON (valid against ``schema`` when given) |
    length: DAPO's overlong penalty in [-1, 0] | python: ``function`` | reward_model: ``model``
    | grader: an OpenAI grader (``grader``; docs/graders.md)."""
    weight: float = 1.0
    """Weight in the summed reward (negative weights penalise)."""
    name: str | None = None
    """Metric name (``reward_<name>``); default: the type, for ``python`` the function's name
    (numbered when repeated)."""
    field: str | None = None
    """exact_match: the example field holding the reference answer (default ``answer``);
    json_schema: an example field holding a per-example schema."""
    pattern: str | None = None
    """regex: the pattern; exact_match: a pattern extracting the answer (group 1, else the match)."""
    full_match: bool = False
    """regex: the whole (stripped) completion must match, not just contain a match."""
    ignore_case: bool = False
    """exact_match / regex: compare case-insensitively."""
    schema: str | dict | None = None
    """json_schema: a JSON-schema file, or the schema inline as a mapping."""
    function: str | None = None
    """python: ``package.module:function`` or ``path/to/file.py:function``, called as
    ``function(prompt, completion, **extra_fields) -> float``."""
    model: str | None = None
    """reward_model: a reward model folder (the result of ``method: reward``)."""
    max_tokens: int | None = None
    """length: L_max, completions longer than this get -1 (default ``grpo.max_new_tokens``)."""
    cache_tokens: int | None = None
    """length: the soft interval L_cache before L_max where the penalty ramps from 0 to -1
    (default a quarter of ``max_tokens``)."""
    grader: str | dict | None = None
    """grader: an OpenAI grader object (string_check, text_similarity, python, score_model,
    label_model, multi) inline, or a .json/.yaml file holding one. Its templates see
    ``{{sample.output_text}}`` / ``{{sample.output_json}}`` (the completion) and ``{{item.*}}``
    (the example's fields, plus ``prompt`` and ``messages``)."""
    judge_model: str | dict | None = None
    """grader: the local model (folder or .gguf file) that runs its score_model / label_model
    graders, or a mapping from a grader's ``model`` name to one; default: the grader's
    ``model`` itself when that is a local folder or .gguf file."""


@dataclass(frozen=True)
class GrpoConfig:
    """Online RL with Group Relative Policy Optimization (``method: grpo``); see docs/grpo.md."""

    group_size: int = 8
    """Completions sampled per prompt (G); advantages are normalised within each group."""
    max_new_tokens: int = 128
    """Most tokens sampled per completion."""
    temperature: float = 1.0
    """Sampling temperature; log-probs in the loss use the same temperature."""
    top_p: float = 1.0
    """Nucleus sampling (1.0: sample from the full distribution, the on-policy choice)."""
    epsilon: float = 0.2
    """Clip range ε of the policy ratio (lower side)."""
    epsilon_high: float | None = None
    """Upper clip 1 + ε_high (DAPO's clip-higher); default: ``epsilon``."""
    beta: float = 0.0
    """Weight of the k3 KL penalty to the reference (the base model with adapters disabled);
    DeepSeekMath used 0.04. 0 disables the penalty (the KL is still reported with adapters)."""
    scale_rewards: bool = True
    """Divide advantages by the group's reward std (GRPO); false: centre only (Dr. GRPO)."""
    loss_normalization: Literal["sequence", "constant"] = "sequence"
    """sequence: mean over each completion's tokens (GRPO) | constant: token sum / max_new_tokens
    (Dr. GRPO, no length bias)."""
    iterations: int = 1
    """Optimizer steps per rollout (GRPO's μ, TRL's num_iterations): 1 samples afresh every
    step (ratio 1, clip inactive); μ > 1 re-uses each rollout for μ steps, where the ratio to
    the sampling policy and the clip act. ``train.save_every`` and ``train.max_steps`` must be
    multiples of it."""
    rewards: list[GrpoRewardConfig] = field(default_factory=list)
    """Reward functions; the reward of a completion is their weighted sum."""


@dataclass(frozen=True)
class PreferenceConfig:
    """Preference tuning (``method: dpo``), KTO and reward models; see docs/preference.md."""

    loss: Literal[PAIR_LOSS_NAMES] = "sigmoid"
    """DPO-family loss (method dpo): sigmoid (DPO) | ipo | hinge (SLiC) | robust (rDPO) |
    simpo (reference-free, length-normalised) | orpo (odds ratio + SFT term, no reference) |
    apo_zero (APO: each answer anchored to the reference on its own)."""
    beta: float | Literal["auto"] = "auto"
    """Strength of the implicit reward (DPO/KTO β, IPO τ, SimPO β, ORPO λ); auto: 0.1."""
    gamma: float = 0.5
    """SimPO target reward margin γ."""
    length_normalize: bool = False
    """ipo: divide each log-ratio by its answer's length (TRL's IPO, whose β then carries over
    unchanged); false: summed log-probabilities (Azar et al. 2023, eq. 17)."""
    label_smoothing: float = 0.0
    """Assumed rate of flipped preference labels ε (sigmoid: conservative DPO; robust: rDPO)."""
    precompute_reference: bool | Literal["auto"] = "auto"
    """Compute the reference log-probs once before training (and cache them) instead of a
    reference forward per step; auto: yes for full fine-tuning, no for adapters (whose
    reference is the base with the adapter disabled)."""
    reference_cache: str | None = None
    """Folder for cached reference log-probs, keyed by content hash (default: output_dir)."""
    desirable_weight: float = 1.0
    """KTO λ_D: weight of desirable examples."""
    undesirable_weight: float = 1.0
    """KTO λ_U: weight of undesirable examples."""


@dataclass(frozen=True)
class RunConfig:
    """A whole run. Sections: model, data, adapter, train; plus method and output_dir."""

    model: ModelConfig = field(default_factory=ModelConfig)
    method: Literal[METHOD_NAMES] = "sft"
    """sft | pretrain | dpo (the DPO family, see ``preference``) | kto | reward | grpo | distill."""
    data: DataConfig = field(default_factory=DataConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    grpo: GrpoConfig = field(default_factory=GrpoConfig)
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)
    output_dir: str = "runs/run"
    """The run folder: resolved config, run.json, metrics, checkpoints and ``final/``. Rerunning
    into a folder resumes its run; another config over a complete run is refused (unless
    ``--no-resume`` retrains it)."""
