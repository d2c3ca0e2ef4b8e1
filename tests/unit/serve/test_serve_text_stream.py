"""Incremental detokenisation: multi-token characters and stop strings across token boundaries."""

from tunesmith.serve.text import TextStream


def _push_all(stream, ids):
    out = []
    for t in ids:
        delta, stopped = stream.push(t)
        out.append(delta)
        if stopped:
            return out, True
    return out + [stream.finish()], False


def test_text_is_released_only_when_complete(tiny_tokenizer):
    ids = tiny_tokenizer.encode("tea 日本 boil", add_special_tokens=False)
    deltas, stopped = _push_all(TextStream(tiny_tokenizer), ids)
    assert not stopped and "".join(deltas) == "tea 日本 boil"
    assert all("\ufffd" not in d for d in deltas)  # a 3-byte character never leaks in pieces


def test_stop_string_across_tokens_is_cut_and_never_leaked(tiny_tokenizer):
    text = "the kettle is hot and the tea is warm"
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    deltas, stopped = _push_all(TextStream(tiny_tokenizer, ["is warm", "hot an"]), ids)
    assert stopped and "".join(deltas) == "the kettle is "
    released = ""
    for d in deltas:  # at no point was any part of the stop string released
        released += d
        assert "h" not in released[len("the kettle is ") :]


def test_held_back_prefix_is_released_when_it_diverges(tiny_tokenizer):
    ids = tiny_tokenizer.encode("red sky red sun", add_special_tokens=False)
    stream = TextStream(tiny_tokenizer, ["red moon"])
    deltas, stopped = _push_all(stream, ids)
    assert not stopped and "".join(deltas) == "red sky red sun"
