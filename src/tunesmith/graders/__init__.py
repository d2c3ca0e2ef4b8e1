"""OpenAI-compatible graders: one implementation for RFT jobs, GRPO rewards and eval scorers.

* :mod:`.spec` — parse and check a grader definition (OpenAI's JSON shapes); :class:`GraderError`.
* :mod:`.template` — the ``{{item.x}}`` / ``{{sample.output_text}}`` substitution language.
* :mod:`.similarity` — the ``text_similarity`` metrics.
* :mod:`.formula` — the multi grader's ``calculate_output`` arithmetic.
* :mod:`.sandbox` — running a python grader's untrusted code in an isolated child process.
* :mod:`.model_graders` — ``score_model`` / ``label_model`` over an injected judge function.
* :mod:`.run` — :func:`grade` / :func:`grade_many` returning :class:`GraderResult`;
  :func:`check_runnable` before long work.
* :mod:`.load` — a grader given inline or as a JSON / YAML file; the item fields it reads.
* :mod:`.judge` — :class:`LocalJudge`: model graders run on a local model with tunesmith's own
  generation.

See docs/graders.md.
"""

from .judge import LocalJudge, judge_paths
from .load import item_keys, read_grader
from .model_graders import JudgeReply
from .run import GraderResult, check_runnable, grade, grade_many, make_sample
from .sandbox import SandboxConfig
from .spec import GraderError, parse_grader

__all__ = [
    "GraderError",
    "GraderResult",
    "JudgeReply",
    "LocalJudge",
    "SandboxConfig",
    "check_runnable",
    "grade",
    "grade_many",
    "item_keys",
    "judge_paths",
    "make_sample",
    "parse_grader",
    "read_grader",
]
