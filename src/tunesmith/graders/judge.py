"""The local judge: ``score_model`` / ``label_model`` graders run on a local model through
tunesmith's own generation code (:func:`tunesmith.models.generate.generate_ids`: batched, left
padding, KV cache).

A grader names its judge by ``model`` (``"gpt-4o-2024-08-06"``); open models have no such
names, so the caller maps each name to a local model — a Hugging Face folder, a run or adapter
folder, or a ``.gguf`` file (:func:`judge_paths`):

* a single path: every model grader uses it (``judge_model: PATH`` / ``--judge-model PATH``);
* a mapping ``{grader model name: path}`` (``judge_model: {gpt-4o: PATH}`` /
  ``--judge-model gpt-4o=PATH``), every key naming a model some grader uses;
* otherwise the grader's ``model`` itself when it is a local folder or ``.gguf`` file.

:class:`LocalJudge` is the ``judge(requests, params)`` function of
:mod:`tunesmith.graders.model_graders`. Each model is loaded once, on :meth:`LocalJudge.load`
or the first call, and reused for every later batch. Per request: the templated messages are
rendered with the judge's chat template (role ``developer`` becomes ``system``; open chat
templates have no developer role) and a reply is generated with the grader's
``sampling_params``:

* ``temperature`` — default 0 (greedy: the same sample gets the same grade); > 0 samples;
* ``top_p`` — nucleus sampling when sampling (default 1);
* ``seed`` — the sampling seed (default 0); sampling runs in a forked RNG, so a judge call in
  the middle of training leaves the training RNG (and with it resume == uninterrupted) alone;
* ``max_completions_tokens`` — the reply's length limit (default :data:`DEFAULT_MAX_TOKENS`);
* ``reasoning_effort`` — accepted and ignored: it steers OpenAI's reasoning models and has no
  meaning for an open model's plain generation.

``response_format`` (the ``{"result": …}`` JSON schema) is not enforced — there is no
constrained decoding; the graders' reply parser reads a JSON ``result`` or the first number /
the label in free text. The local judge reads text only: a grader whose input has image or
audio parts is rejected by :func:`check_text_only`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import TunesmithError
from .model_graders import JudgeReply
from .spec import Grader, GraderError, LabelModel, Multi, ScoreModel

DEFAULT_MAX_TOKENS = 128
DEFAULT_BATCH_SIZE = 16


def model_graders(spec: Grader, path: str = "grader") -> list[tuple[str, ScoreModel | LabelModel]]:
    """Every ``score_model`` / ``label_model`` in ``spec`` (a multi grader's too) with its
    field path."""
    if isinstance(spec, Multi):
        return [
            found
            for key, sub in spec.graders.items()
            for found in model_graders(sub, f"{path}.graders.{key}")
        ]
    if isinstance(spec, (ScoreModel, LabelModel)):
        return [(path, spec)]
    return []


def check_text_only(spec: Grader, path: str = "grader") -> None:
    """GraderError naming the first image or audio part of a model grader's input."""
    for where, grader in model_graders(spec, path):
        for i, message in enumerate(grader.input):
            for j, part in enumerate(message.content):
                if part["type"] not in ("input_text", "output_text"):
                    raise GraderError(
                        f"{where}.input[{i}].content[{j}].type",
                        f"{part['type']} needs a multimodal judge; tunesmith's local judge reads text only",
                    )


def judge_paths(
    specs: Sequence[tuple[str, Grader]], judge_model: str | Mapping[str, str] | None, option: str
) -> dict[str, str]:
    """``{grader model name: local model path}`` for every model grader in ``specs`` (pairs of
    field path and grader), by the rules of the module docstring. ``option`` names the setting
    in errors (``grpo.rewards[0].judge_model``, ``--judge-model``). Raises GraderError (a model
    with no local judge, a path that does not exist) or ValueError (``judge_model`` given but
    unused, or a mapping key no grader uses)."""
    found = [m for path, spec in specs for m in model_graders(spec, path)]
    if not found:
        if judge_model:
            raise ValueError(
                f"{option} is set but no grader here is a score_model or "
                "label_model grader (only those use a judge)"
            )
        return {}
    names = {grader.model for _, grader in found}
    if isinstance(judge_model, Mapping):
        stray = sorted(set(judge_model) - names)
        if stray:
            raise ValueError(f"{option} maps {stray} but the graders' models are {sorted(names)}")
    out: dict[str, str] = {}
    for where, grader in found:
        name = grader.model
        if isinstance(judge_model, str):
            path, source = judge_model, option
        elif isinstance(judge_model, Mapping) and name in judge_model:
            path, source = str(judge_model[name]), f"{option}[{name!r}]"
        elif _is_local_model(name):
            path, source = name, f"{where}.model"
        else:
            raise GraderError(
                f"{where}.model",
                f"{name!r} is not a local model; map it to a "
                f"local judge with {option} (a model folder or .gguf file)",
            )
        if not _is_local_model(path):
            raise GraderError(
                f"{where}.model", f"the judge {path} ({source}) is not a model folder or .gguf file"
            )
        out[name] = path
    return out


def _is_local_model(path: str) -> bool:
    p = Path(path)
    return p.is_dir() or (p.is_file() and p.suffix.lower() == ".gguf")


class LocalJudge:
    """``judge(requests, params) -> list[JudgeReply]`` over local models (module docstring).

    ``models`` maps a grader's ``model`` name to a local path (:func:`judge_paths`); ``device``
    and ``dtype`` are where and how the judge models are loaded (the run's device and precision
    name, as ``train.dtype``: auto | fp32 | bf16 | fp16; auto is bf16 on a CUDA device that
    supports it, else fp32).
    """

    def __init__(
        self,
        models: Mapping[str, str],
        *,
        device: Any = "cpu",
        dtype: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
    ):
        self.models = dict(models)
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self._loaded: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load every judge model now (so a bad model fails before any work is done)."""
        for path in dict.fromkeys(self.models.values()):
            self._model(path)

    def _model(self, path: str) -> tuple[Any, Any]:
        with self._lock:
            if path not in self._loaded:
                from ..models.generate import load_for_inference

                self._loaded[path] = load_for_inference(path, device=str(self.device), dtype=self.torch_dtype)
            return self._loaded[path]

    @property
    def torch_dtype(self):
        """The torch dtype the judge models load in (``dtype`` resolved for ``device``)."""
        import torch

        from ..models.device import resolve_dtype
        from ..models.quantize import DTYPES

        return DTYPES[resolve_dtype(self.dtype, torch.device(self.device))]

    def __call__(self, requests: list[list[dict]], params: dict) -> list[JudgeReply]:
        from ..models.generate import generate_ids, prompt_token_ids

        name = params.get("model")
        if name not in self.models:
            raise TunesmithError(f"no local judge is configured for model {name!r}")
        model, tokenizer = self._model(self.models[name])
        prompts = [prompt_token_ids(tokenizer, _chat_messages(messages)) for messages in requests]
        temperature = params.get("temperature")
        max_tokens = params.get("max_completions_tokens")
        top_p = params.get("top_p")
        seed = params.get("seed")
        replies = generate_ids(
            model,
            tokenizer,
            prompts,
            max_new_tokens=int(max_tokens or DEFAULT_MAX_TOKENS),
            temperature=float(temperature or 0.0),
            top_p=float(top_p if top_p is not None else 1.0),
            seed=int(seed or 0),
            batch_size=self.batch_size,
        )
        return [
            JudgeReply(r["text"], prompt_tokens=len(p), completion_tokens=r["n_tokens"])
            for r, p in zip(replies, prompts)
        ]


def _chat_messages(messages: list[dict]) -> list[dict]:
    out = []
    for m in messages:
        if not isinstance(m.get("content"), str):
            raise TunesmithError("the local judge reads text only; this request has non-text content parts")
        out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": m["content"]})
    return out
