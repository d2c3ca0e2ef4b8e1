"""score_model / label_model over an injected judge (a fake here: the interface is the contract)."""

import pytest

from tunesmith.graders import GraderError, JudgeReply, grade, grade_many
from tunesmith.graders.model_graders import ReplyParseError, parse_label, parse_score

SCORE = {
    "type": "score_model",
    "name": "judge",
    "model": "judge-7b",
    "input": [
        {"role": "system", "content": "Rate the answer from 0 to 10."},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Q: {{item.question}}\n"},
                {"type": "output_text", "text": "A: {{sample.output_text}}"},
            ],
        },
    ],
    "range": [0, 10],
    "sampling_params": {"temperature": 0.2, "max_completions_tokens": 16},
}
LABEL = {
    "type": "label_model",
    "name": "tone",
    "model": "judge-7b",
    "input": [
        {"role": "user", "content": "Tone of: {{sample.output_text}}"},
        {"role": "user", "content": [{"type": "input_image", "image_url": "{{item.image}}"}]},
    ],
    "labels": ["polite", "neutral", "rude"],
    "passing_labels": ["polite", "neutral"],
}


class FakeJudge:
    """Replies from a list, records what it was asked."""

    def __init__(self, *replies):
        self.replies, self.calls = list(replies), []

    def __call__(self, requests, params):
        self.calls.append((requests, params))
        return self.replies[: len(requests)]


def test_score_model_renders_the_messages_and_passes_model_and_sampling_params():
    judge = FakeJudge(JudgeReply("8", prompt_tokens=30, completion_tokens=1))
    result = grade(SCORE, "Paris", {"question": "Capital of France?"}, judge=judge)
    assert result.score == 8.0 and result.error is None
    [(requests, params)] = judge.calls
    assert requests == [
        [
            {"role": "system", "content": "Rate the answer from 0 to 10."},
            {"role": "user", "content": "Q: Capital of France?\nA: Paris"},
        ]
    ]
    assert params["model"] == "judge-7b"
    assert params["temperature"] == 0.2 and params["max_completions_tokens"] == 16
    schema = params["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["result"] == {"type": "number", "minimum": 0.0, "maximum": 10.0}
    assert result.token_usage_per_model == {
        "judge-7b": {"prompt_tokens": 30, "completion_tokens": 1, "total_tokens": 31}
    }
    assert result.metadata["token_usage"] == 31
    assert result.metadata["sampled_model_name"] == "judge-7b"


def test_one_judge_call_for_a_batch():
    judge = FakeJudge("1", "2", "3")
    results = grade_many(SCORE, ["a", "b", "c"], [{"question": "q"}] * 3, judge=judge)
    assert [r.score for r in results] == [1.0, 2.0, 3.0]
    assert len(judge.calls) == 1 and len(judge.calls[0][0]) == 3


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("7", 7.0),
        ("Score: 7/10", 7.0),  # the first number
        ("  6.5 ", 6.5),
        ('{"result": 9}', 9.0),
        ('```json\n{"steps": [], "result": 0.5}\n```', 0.5),
        ("1e1", 10.0),
    ],
)
def test_parse_score(reply, expected):
    assert parse_score(reply, (0.0, 10.0)) == expected


@pytest.mark.parametrize(
    "reply, fragment",
    [
        ("excellent", "no number"),
        ("11", "outside the range [0, 10]"),
        ("-1", "outside the range"),
        ('{"result": 12}', "outside the range"),
    ],
)
def test_unusable_scores_are_parse_errors_not_clamped(reply, fragment):
    with pytest.raises(ReplyParseError) as exc:
        parse_score(reply, (0.0, 10.0))
    assert fragment in str(exc.value)


def test_negative_ranges_work():
    assert parse_score("-0.5", (-1.0, 1.0)) == -0.5


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("polite", "polite"),
        (" rude\n", "rude"),
        ('"neutral"', "neutral"),
        ("polite.", "polite"),
        ("`rude`", "rude"),
        ("Polite", "polite"),
        ('{"result": "rude"}', "rude"),
    ],
)
def test_parse_label(reply, expected):
    assert parse_label(reply, ["polite", "neutral", "rude"]) == expected


@pytest.mark.parametrize("reply", ["not polite", "polite or rude", "", "friendly"])
def test_labels_must_be_unambiguous(reply):
    with pytest.raises(ReplyParseError):
        parse_label(reply, ["polite", "neutral", "rude"])


def test_label_model_passing_labels_score_one_and_images_are_templated():
    judge = FakeJudge("neutral", "rude", "sarcastic")
    results = grade_many(LABEL, ["ok", "go away", "sure"], [{"image": "http://x/1.png"}] * 3, judge=judge)
    assert [r.score for r in results] == [1.0, 0.0, 0.0]
    assert results[2].metadata["errors"]["model_grader_parse_error"] is True
    first = judge.calls[0][0][0]
    assert first[1] == {"role": "user", "content": [{"type": "input_image", "image_url": "http://x/1.png"}]}
    assert judge.calls[0][1]["response_format"]["json_schema"]["schema"]["properties"]["result"]["enum"] == [
        "polite",
        "neutral",
        "rude",
    ]


def test_refusals_failures_and_wrong_reply_counts_are_per_sample_errors():
    refused = grade(SCORE, "x", {"question": "q"}, judge=FakeJudge(JudgeReply("", refusal=True)))
    assert refused.metadata["errors"]["model_grader_refusal_error"] is True

    def broken(requests, params):
        raise ConnectionError("inference server down")

    failed = grade(SCORE, "x", {"question": "q"}, judge=broken)
    assert failed.score == 0.0
    assert failed.metadata["errors"]["model_grader_server_error"] is True
    assert "inference server down" in failed.metadata["errors"]["model_grader_server_error_details"]
    short = grade_many(SCORE, ["a", "b"], [{"question": "q"}] * 2, judge=FakeJudge("1"))
    assert all(r.metadata["errors"]["model_grader_server_error"] for r in short)


def test_a_sample_missing_a_template_variable_is_not_sent_to_the_judge():
    judge = FakeJudge("5")
    results = grade_many(SCORE, ["a", "b"], [{}, {"question": "q"}], judge=judge)
    assert results[0].metadata["errors"]["invalid_variable_error"] is True
    assert "item has no key 'question'" in results[0].error
    assert results[1].score == 5.0 and len(judge.calls[0][0]) == 1


def test_a_model_grader_without_a_judge_is_a_grader_error():
    with pytest.raises(GraderError) as exc:
        grade({"type": "multi", "name": "m", "graders": {"j": SCORE}, "calculate_output": "j"}, "x", {})
    assert exc.value.path == "grader.graders.j"
    assert "judge" in str(exc.value)
