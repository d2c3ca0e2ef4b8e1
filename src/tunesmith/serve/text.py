"""Turn a growing list of generated token ids into text deltas, honouring stop strings.

Byte-level BPE tokens are not characters: one character can span several tokens (a partial
UTF-8 sequence decodes to U+FFFD until it completes) and a stop string can straddle tokens.
``TextStream`` therefore only releases text that can no longer change:

* decoding uses a small window (``prefix_offset``/``read_offset``, the scheme of HF's
  ``TextStreamer`` and vLLM's detokenizer) so each step costs O(window), not O(length);
* text ending in U+FFFD is held back until the next token completes the character;
* the longest tail that is a prefix of some stop string is held back until it either becomes
  the stop string (generation ends, the stop string and everything after it are dropped, as the
  OpenAI API does) or diverges (then it is released).
"""

from __future__ import annotations


class TextStream:
    """Incremental detokenizer for one sequence. ``push(token) -> (delta, stopped)``."""

    def __init__(self, tokenizer, stop: list[str] | None = None):
        self.tokenizer = tokenizer
        self.stop = [s for s in (stop or []) if s]
        self.ids: list[int] = []
        self.text = ""  # all text decoded so far (complete characters only)
        self.emitted = 0  # characters of ``text`` already released
        self.prefix_offset = 0
        self.read_offset = 0
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token: int) -> tuple[str, bool]:
        """Add one generated token; returns (text now safe to release, whether a stop string hit)."""
        if self.stopped:
            return "", True
        self.ids.append(token)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        if full.endswith("\ufffd") or len(full) <= len(prefix):
            return self._release(final=False)  # incomplete character (or nothing new): wait
        self.text += full[len(prefix) :]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return self._release(final=False)

    def finish(self) -> str:
        """Release whatever is held back (generation ended for another reason)."""
        if self.stopped:
            return ""
        tail = self._decode(self.ids[self.prefix_offset :])
        done = self._decode(self.ids[self.prefix_offset : self.read_offset])
        if len(tail) > len(done):
            self.text += tail[len(done) :].rstrip("\ufffd")
        delta, _ = self._release(final=True)
        return delta

    def _release(self, final: bool) -> tuple[str, bool]:
        # Search only where a new match can start: a stop string may begin in the held-back tail.
        if self.stop:
            start = max(0, self.emitted - max(len(s) for s in self.stop))
            hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
            if hits:
                cut = min(hits)
                self.text = self.text[:cut]
                self.stopped = True
                delta = self.text[self.emitted :]
                self.emitted = len(self.text)
                return delta, True
        end = len(self.text)
        if not final and self.stop:
            end -= self._held(self.text)
        end = max(end, self.emitted)
        delta = self.text[self.emitted : end]
        self.emitted = end
        return delta, False

    def _held(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best
