"""The local judge on a real model: SmolLM2-135M-Instruct (the shipped GGUF) grades two answers
through a score_model grader, with real generated replies parsed into numbers.

SmolLM2-135M is a weak judge; the test asserts that the path works end to end — templated
messages, the judge's chat template, greedy generation with the grader's sampling params, reply
parsing — and that a reply it cannot parse is recorded as a parse error scoring 0, not a crash.
It does not assert the quality of the grades.
"""

from __future__ import annotations

from tunesmith.graders import LocalJudge, grade_many, judge_paths, parse_grader

GRADER = {
    "type": "score_model",
    "name": "capital",
    "model": "smollm2",
    "range": [0, 10],
    "sampling_params": {
        "max_completions_tokens": 8,
        "temperature": 0,
        "seed": 3,
        "reasoning_effort": "medium",
    },  # accepted and ignored
    "input": [
        {"role": "developer", "content": "You grade answers to quiz questions."},
        {
            "role": "user",
            "content": "Question: {{item.question}}\nAnswer: {{sample.output_text}}\n"
            "On a scale of 0 to 10, how correct is the answer? Reply "
            "with just the number.",
        },
    ],
}


def test_smollm2_scores_answers_through_score_model(smollm2_gguf):
    spec = parse_grader(GRADER)
    paths = judge_paths([("grader", spec)], {"smollm2": str(smollm2_gguf)}, "judge_model")
    judge = LocalJudge(paths)
    item = {"question": "What is the capital of France?"}
    results = grade_many(spec, ["Paris", "Berlin"], [item, item], judge=judge)
    for r in results:
        usage = r.token_usage_per_model["smollm2"]
        assert usage["prompt_tokens"] > 20 and 1 <= usage["completion_tokens"] <= 8
        if r.error is None:  # a real reply parsed into a number in the grader's range
            assert 0.0 <= r.score <= 10.0
        else:  # or a clean per-sample parse error
            assert r.score == 0.0 and r.metadata["errors"]["model_grader_parse_error"], r.error
    # Loaded once and reused; greedy decoding grades the same answers the same way again.
    again = grade_many(spec, ["Paris", "Berlin"], [item, item], judge=judge)
    assert [(r.score, r.error) for r in again] == [(r.score, r.error) for r in results]
    assert len(judge._loaded) == 1
