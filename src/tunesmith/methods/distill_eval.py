"""How close a student is to its teacher on held-out data: ``tunesmith distill eval``.

Scores every supervised position of a chat / SFT file with both models and reports the mean
forward ``KL(teacher ‖ student)`` at temperature 1 (nats per token), the top-1 agreement (the
share of positions where both models' most likely next tokens are the same) and the student's
cross-entropy on the file's labels. Works for any student — distilled, SFT-trained or untouched —
so the methods can be compared on the same footing.
"""

from __future__ import annotations

import torch

from ..config.schema import DistillConfig
from ..data.collate import collate
from ..data.formats import load_examples
from ..data.render import Renderer, render_all
from ..engine.loop import split_by_tokens
from ..errors import DataError
from .distill import DistillLoss
from .distill_teacher import attention, check_same_vocabulary, model_vocab_size


@torch.no_grad()
def compare_to_teacher(
    student,
    teacher,
    tokenizer,
    examples: list,
    *,
    max_length: int = 1024,
    max_tokens: int = 4096,
    chunk_size: int = 1024,
) -> dict:
    """``{"kl", "agreement", "ce", "positions", "examples"}`` of ``student`` against ``teacher``
    over the supervised positions of ``examples`` (rendered with ``tokenizer``)."""
    rendered, _ = render_all(Renderer(tokenizer, max_length=max_length), examples)
    if not rendered:
        raise DataError("no example with trained (assistant) tokens to compare on")
    vocab = min(model_vocab_size(student), model_vocab_size(teacher))
    score = DistillLoss(
        DistillConfig(teacher="-", alpha=0.0, divergence="forward_kl"), teacher, vocab, None, chunk_size
    )
    device = next(student.parameters()).device
    was_training = student.training
    student.eval()
    totals = {"ce": 0.0, "divergence": 0.0, "agree": 0.0}
    n = 0
    with attention(student):
        for group in split_by_tokens(rendered, max_tokens, lambda r: len(r.input_ids)):
            batch = collate(group).to(device)
            _, sums = score.score(student, batch, None, batch.target_ids)
            for key in totals:
                totals[key] += sums[key]
            n += batch.n_targets
    student.train(was_training)
    return {
        "kl": totals["divergence"] / n,
        "agreement": totals["agree"] / n,
        "ce": totals["ce"] / n,
        "positions": n,
        "examples": len(rendered),
    }


def compare_paths(
    student: str,
    teacher: str,
    data: str,
    *,
    student_adapter: str | None = None,
    teacher_adapter: str | None = None,
    max_length: int = 1024,
    device: str = "cpu",
) -> dict:
    """:func:`compare_to_teacher` for models given as folders / run directories."""
    from ..models.generate import load_for_inference
    from ..models.load import load_tokenizer
    from .distill_teacher import describe, load_teacher, resolve_teacher, teacher_tokenizer_dir

    dev = torch.device(device)
    model, tokenizer = load_for_inference(student, student_adapter, device=device)
    base, adapter = resolve_teacher(teacher, teacher_adapter)
    check_same_vocabulary(
        tokenizer, load_tokenizer(teacher_tokenizer_dir(base, adapter)), student, describe(base, adapter)
    )
    teacher_model = load_teacher(base, adapter, dev)
    report = compare_to_teacher(
        model, teacher_model, tokenizer, load_examples(data, expect="sft"), max_length=max_length
    )
    return {"student": student, "teacher": describe(base, adapter), "data": data, **report}
