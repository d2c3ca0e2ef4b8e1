"""``tunesmith data check FILE --model SmolLM2.gguf``: its token counts are what transformers'
tokenizer gives for each conversation through the model's chat template."""

from __future__ import annotations

import json
import statistics

import pytest


@pytest.fixture(scope="module")
def checked(smollm2_gguf, smollm2_chat_data, smollm2_dir):
    """(exit code, JSON report) of the command, in-process, with the model named by its .gguf."""
    import contextlib
    import io

    from tunesmith.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["data", "check", str(smollm2_chat_data[0]), "--model", str(smollm2_gguf), "--json"])
    return code, json.loads(out.getvalue())


def hf_counts(smollm2_dir, path) -> tuple[list[int], int]:
    """(tokens per conversation, trained tokens in all) from transformers directly: the chat
    template's token ids, and each assistant reply's tokens plus its <|im_end|>."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    lengths, trained = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        lengths.append(len(tok.apply_chat_template(messages, tokenize=True)["input_ids"]))
        trained += sum(
            len(tok.encode(m["content"], add_special_tokens=False)) + 1
            for m in messages
            if m["role"] == "assistant"
        )
    return lengths, trained


def test_token_counts_equal_the_hf_tokenizer(checked, smollm2_dir, smollm2_chat_data):
    code, report = checked
    assert code == 0 and report["ok"] and report["n_examples"] == 48
    tokens = report["stats"]["tokens"]
    lengths, trained = hf_counts(smollm2_dir, smollm2_chat_data[0])
    assert tokens["examples"] == len(lengths) == 48
    assert tokens["total"] == tokens["total_after_truncation"] == sum(lengths)
    assert (tokens["min"], tokens["max"]) == (min(lengths), max(lengths))
    assert tokens["median"] == statistics.median(lengths)
    assert tokens["trained"] == trained
    assert tokens["over_max_length"] == 0 and tokens["dropped_no_trained_tokens"] == 0
    assert not report["errors"]


def test_same_report_as_the_dequantised_folder(checked, smollm2_dir, smollm2_chat_data, capsys):
    from tunesmith.cli import main

    assert main(["data", "check", str(smollm2_chat_data[0]), "--model", str(smollm2_dir), "--json"]) == 0
    by_folder = json.loads(capsys.readouterr().out)
    assert checked[1]["stats"]["tokens"] == by_folder["stats"]["tokens"]
    assert by_folder["stats"]["estimate"] is not None


def test_estimate_for_a_gguf_model(checked):
    """The training estimate counts the parameters of the dequantised folder."""
    estimate = checked[1]["stats"]["estimate"]
    assert estimate is not None and estimate["params"] > 100_000_000
