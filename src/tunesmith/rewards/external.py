"""Rewards from outside tunesmith: the operator's Python callables and trained reward models.

Both are named only in the operator's config file (``grpo.rewards``); nothing in the training
data can choose code or a model to load.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

from ..errors import ConfigError, TunesmithError
from . import Sample


def load_callable(ref: str, where: str):
    """Import ``package.module:function`` or ``path/to/file.py:function``; ConfigError if that fails."""
    module_ref, sep, name = ref.rpartition(":")
    if not sep or not module_ref or not name.isidentifier():
        raise ConfigError(
            f"config: '{where}.function' = {ref!r} must look like "
            "'package.module:function' or 'path/to/file.py:function'"
        )
    try:
        if module_ref.endswith(".py"):
            path = Path(module_ref)
            if not path.is_file():
                raise ConfigError(f"config: '{where}.function': file not found: {module_ref}")
            # A private module name per file, so two reward files called rewards.py don't collide.
            digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
            mod_name = f"_tunesmith_reward_{path.stem}_{digest}"
            module = sys.modules.get(mod_name)
            if module is None:
                spec = importlib.util.spec_from_file_location(mod_name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[mod_name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[mod_name]
                    raise
        else:
            module = importlib.import_module(module_ref)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"config: '{where}.function': could not import {module_ref}: {type(exc).__name__}: {exc}"
        ) from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"config: '{where}.function': {module_ref} has no function '{name}'")
    return fn


def python_function(spec, where: str):
    """Reward ``function(prompt, completion, **extra) -> float`` called once per completion.

    ``prompt`` is the example's prompt as in the data (string or message list), ``completion``
    the decoded text, ``extra`` the example's other fields as keyword arguments (a function
    that does not want them all takes ``**kwargs``). An exception inside the function stops
    training with a message naming it: a silently-zero reward would train the wrong thing.
    """
    fn = load_callable(spec.function, where)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = set(params)

    def score(samples: list[Sample]) -> list[float]:
        out = []
        for s in samples:
            extra = (
                s.extra if takes_all or not params else {k: v for k, v in s.extra.items() if k in accepted}
            )
            try:
                out.append(fn(s.prompt, s.completion, **extra))
            except Exception as exc:
                raise TunesmithError(
                    f"reward function {spec.function} failed on a completion: {type(exc).__name__}: {exc}"
                ) from exc
        return out

    return score


def reward_model(spec, where: str, *, device=None):
    """The score of a trained reward model (``method: reward``) for prompt + completion.

    The conversation it scores is the prompt's messages (a string prompt becomes one user
    message) followed by the completion as the assistant turn, rendered with the reward
    model's own chat template (:func:`tunesmith.models.reward_model.score`).
    """
    from ..models.reward_model import load_reward_model
    from ..models.reward_model import score as rm_score

    try:
        model, tokenizer = load_reward_model(spec.model, device or "cpu")
    except TunesmithError as exc:
        raise ConfigError(f"config: '{where}.model': {exc}") from None

    def score(samples: list[Sample]) -> list[float]:
        conversations = []
        for s in samples:
            messages = (
                [{"role": "user", "content": s.prompt}] if isinstance(s.prompt, str) else list(s.prompt)
            )
            conversations.append(messages + [{"role": "assistant", "content": s.completion}])
        return rm_score(model, tokenizer, conversations)

    return score
