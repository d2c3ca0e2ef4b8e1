"""OpenAI-compatible graders: one implementation for RFT jobs, GRPO rewards and eval scorers.

* :mod:`.spec` — parse and check a grader definition (OpenAI's JSON shapes); :class:`GraderError`.
* :mod:`.template` — the ``{{item.x}}`` / ``{{sample.output_text}}`` substitution language.
* :mod:`.similarity` — the ``text_similarity`` metrics.
* :mod:`.formula` — the multi grader's ``calculate_output`` arithmetic.
* :mod:`.sandbox` — running a python grader's untrusted code in an isolated child process.
* :mod:`.model_graders` — ``score_model`` / ``label_model`` over an injected judge function.
* :mod:`.run` — :func:`grade` / :func:`grade_many` returning :class:`GraderResult`.

See docs/graders.md.
"""

from .model_graders import JudgeReply
from .run import GraderResult, grade, grade_many, make_sample
from .sandbox import SandboxConfig
from .spec import GraderError, parse_grader

__all__ = ["GraderError", "GraderResult", "JudgeReply", "SandboxConfig", "grade", "grade_many",
           "make_sample", "parse_grader"]
