"""The dequantised SmolLM2 tokenizer splits text as the model was pretrained to: every digit on
its own, before the byte-level pattern (llama.cpp pre-tokenizer ``smollm``; transformers' GGUF
converter alone would build a plain byte-level one that glues a space to a digit)."""

from __future__ import annotations


def test_digits_are_split_off_before_the_byte_level_pattern(smollm2_tokenizer):
    pieces = {
        text: smollm2_tokenizer.convert_ids_to_tokens(
            smollm2_tokenizer(text, add_special_tokens=False).input_ids
        )
        for text in ("x  12345", "The 27-month warranty", "costs 89.95")
    }
    assert pieces["x  12345"] == ["x", "ĠĠ", "1", "2", "3", "4", "5"]
    assert pieces["The 27-month warranty"] == ["The", "Ġ", "2", "7", "-", "month", "Ġwarranty"]
    assert pieces["costs 89.95"][-5:] == ["8", "9", ".", "9", "5"]
