"""Rewards from outside tunesmith: the operator's Python callables and trained reward models.

Both are named only in the operator's config file (``grpo.rewards``); nothing in the training
data can choose code or a model to load.
"""

from __future__ import annotations

import inspect

from ..errors import ConfigError, TunesmithError
from . import Sample


def load_callable(ref: str, where: str):
    """Import ``package.module:function`` or ``path/to/file.py:function``; ConfigError if that fails."""
    from ..usercode import UserCodeError, load_function

    try:
        return load_function(ref)
    except UserCodeError as exc:
        raise ConfigError(f"config: '{where}.function': {exc}") from None


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
