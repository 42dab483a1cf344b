"""Tokens to text, a piece at a time, with stop strings: what a streaming server sends.

Each new token re-decodes the whole answer (a token's text can depend on its neighbours, and a
character can span tokens), and only text that can no longer change is released: never a partial
UTF-8 character, and never the last len(longest stop) - 1 characters, which may still become a
stop string. So the pieces a stream sends join into exactly the text a non-streamed answer has.
"""

from __future__ import annotations

from typing import Sequence


class TextStream:
    def __init__(self, tokenizer, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.ids: list[int] = []
        self.text = ""  # the answer so far, cut before a stop string once one appears
        self.sent = 0  # characters of self.text released
        self.stopped = False  # a stop string appeared: the answer is complete

    def push(self, token: int) -> str:
        """Add a token; returns the text that is now final (may be empty)."""
        if self.stopped:
            return ""
        self.ids.append(int(token))
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cuts = [i for i in (text.find(s, max(0, self.sent - len(s) + 1)) for s in self.stop) if i >= 0]
        if cuts:
            self.stopped = True
            self.text = text[: max(min(cuts), self.sent)]
            return self._release(len(self.text))
        self.text = text
        end = len(text) - self.hold
        if text.endswith("\ufffd"):  # an incomplete character: its next bytes are still to come
            end = min(end, len(text) - 1)
        return self._release(end)

    def flush(self) -> str:
        """The answer ended: the text still held back."""
        return self._release(len(self.text))

    def _release(self, end: int) -> str:
        if end <= self.sent:
            return ""
        piece, self.sent = self.text[self.sent : end], end
        return piece
