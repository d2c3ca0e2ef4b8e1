"""Graders on the server: the create-time check of an RFT job's grader, and what OpenAI's grader
routes (:mod:`.routes_graders`: ``POST /v1/fine_tuning/alpha/graders/validate`` and ``…/run``, the
SDK's ``client.fine_tuning.alpha.graders.validate(grader=…)`` / ``.run(grader=…, model_sample=…,
item=…)``) run.

Contract:

* A grader that is invalid, or could not run on this server, is a 400 in OpenAI's envelope whose
  ``param`` is the field path (``method.reinforcement.grader.graders.acc.operation`` for a job,
  ``grader.…`` for the routes). "Could not run" means: a score_model / label_model whose
  ``model`` is not a judge here (:func:`tunesmith.jobs.settings.judge_models`: the allow-listed
  base models by name, plus ``--grader-model NAME=PATH``), an image or audio part (the local
  judge reads text), ``cosine`` similarity (no embedding model), a metric library that is not
  installed, and a python grader when the sandbox (bubblewrap) does not work here or its source
  does not compile (compiled inside the sandbox, never in the server).
* ``run`` grades one sample and answers the SDK's ``GraderRunResponse``
  (:meth:`tunesmith.graders.GraderResult.to_openai`); a per-sample failure is a 200 with the
  error flag set, as OpenAI answers it. Python graders run in the sandbox's child process, never
  in the server's; model graders run on :class:`tunesmith.graders.LocalJudge` on the CPU, in a
  worker thread (never on the event loop). Grading is serialised (one at a time), and at most
  one judge model is held in the server's memory: the last one used, replaced when a request
  needs another.
"""

from __future__ import annotations

import threading
from typing import Any

from ..serve.protocol import APIError
from .rft import parse_grader_param
from .settings import Settings, judge_models


def check_grader_here(obj: Any, settings: Settings, path: str) -> tuple[Any, dict[str, str]]:
    """``(parsed grader, {grader model name: judge path})`` for a grader that can run on this
    server; APIError 400 naming the field otherwise (module contract). Blocking: a python
    grader's source is compiled in a sandbox process."""
    from ..graders import GraderError, LocalJudge, check_runnable
    from ..graders.judge import check_text_only, model_graders

    spec = parse_grader_param(obj, path)
    available = judge_models(settings)
    judges = {}
    for where, grader in model_graders(spec, path):
        if grader.model not in available:
            shown = ", ".join(sorted(available)) or "none"
            raise APIError(
                400,
                f"{where}.model: {grader.model[:100]!r} is not a grader model on this "
                "server; its operator maps grader model names to local models (--grader-model "
                f"NAME=PATH). Available: {shown}.",
                param=f"{where}.model",
            )
        judges[grader.model] = available[grader.model]
    try:
        check_text_only(spec, path)
        check_runnable(
            spec,
            judge=LocalJudge(judges) if judges else None,
            sandbox_config=settings.grader_sandbox,
            path=path,
        )
    except GraderError as exc:
        raise APIError(400, str(exc), param=exc.path) from None
    return spec, judges


class GraderRunner:
    """Runs ``graders/run`` requests one at a time, holding at most one judge model."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._judge_key: tuple | None = None
        self._judge = None

    def run(self, grader: Any, model_sample: Any, item: Any) -> dict:
        """The ``GraderRunResponse`` body for one sample (blocking; call it off the event loop)."""
        from ..graders import grade_many

        if not isinstance(model_sample, str):
            raise APIError(400, "model_sample must be a string", param="model_sample")
        if item is not None and not isinstance(item, dict):
            raise APIError(400, "item must be an object (the dataset row)", param="item")
        spec, judges = check_grader_here(grader, self.settings, "grader")
        with self._lock:
            judge = self._judge_for(judges)
            result = grade_many(
                spec, [model_sample], [item], judge=judge, sandbox_config=self.settings.grader_sandbox
            )[0]
        return result.to_openai()

    def _judge_for(self, judges: dict[str, str]):
        """The LocalJudge for ``judges`` (None without model graders); a different set of judge
        models replaces the one held (called under the lock)."""
        if not judges:
            return None
        key = tuple(sorted(judges.items()))
        if key != self._judge_key:
            from ..graders import LocalJudge

            self._judge, self._judge_key = None, None  # let the old model go before loading a new one
            self._judge, self._judge_key = LocalJudge(judges, device="cpu"), key
        return self._judge
