"""The LLM's token stream cut into chunks that text-to-speech can start on.

The first chunk of a reply is what the caller waits for, so it may be a clause: it is cut at the first
comma, semicolon, colon or dash once it holds at least `min_clause_words` words ("Sure, we open at nine
tomorrow," → speech starts after five words instead of after the whole sentence). Later chunks are whole
sentences, which sound more natural and cost fewer TTS requests; by then audio is already playing.

A terminator only cuts when whitespace follows it, so "3.30", "1,000", "e.g.x" and URLs never split, and
the decision waits for the next token (about 12 ms at 80 tokens/s). Titles and initials ("Dr.", "J.")
never end a sentence; "a.m.", "p.m." and "etc." end one only when the next word is capitalised.
"""

from typing import Final

_TERMINATORS: Final = frozenset(".!?\u2026")
_CLAUSE_MARKS: Final = frozenset(",;:")
_DASHES: Final = frozenset("\u2014\u2013")  # em and en dash; a hyphen only counts when spaced (" - ")
_CLOSERS: Final = frozenset("\"')]}\u201d\u2019\u00bb")
_OPENERS: Final = "\"'([{\u201c\u2018\u00ab"
# A period after these never ends a sentence.
_TITLES: Final = frozenset(
    {
        "dr",
        "mr",
        "mrs",
        "ms",
        "mx",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "ft",
        "vs",
        "e.g",
        "i.e",
        "dept",
        "apt",
        "ave",
        "blvd",
        "rd",
        "tel",
        "ext",
        "fig",
        "inc",
        "ltd",
        "co",
        "corp",
        "u.s",
        "u.k",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "mon",
        "tue",
        "tues",
        "wed",
        "thu",
        "thur",
        "thurs",
        "fri",
        "sat",
        "sun",
    }
)
# A period after these ends a sentence only if the next word starts with a capital letter.
_SOFT_ABBREVIATIONS: Final = frozenset({"a.m", "p.m", "am", "pm", "etc", "approx"})
# "No. 5" is an abbreviation, "the answer is no. Thanks" is not: it depends on a number following.
_NUMBER_ABBREVIATIONS: Final = frozenset({"no", "nos"})


class SentenceAggregator:
    """Feed it text deltas; it returns the chunks that are complete. `flush()` returns the rest at the end.

    Plain logic, incremental: each character is looked at about once, so a long reply costs linear time.
    """

    def __init__(self, *, min_clause_words: int = 3, max_chars: int = 400) -> None:
        if min_clause_words < 1:
            raise ValueError(f"min_clause_words must be at least 1, got {min_clause_words}")
        self.min_clause_words = min_clause_words
        # A "sentence" that never ends (a list without punctuation) is cut near this length at a comma
        # or a space, so one TTS request never grows unbounded.
        self.max_chars = max_chars
        self._buffer = ""
        self._scan = 0  # everything before this index has been looked at and holds no cut
        self.chunks_emitted = 0

    def feed(self, text: str) -> list[str]:
        if not text:
            return []
        self._buffer += text
        chunks: list[str] = []
        while (cut := self._find_cut()) is not None:
            chunk = self._buffer[:cut].strip()
            self._buffer = self._buffer[cut:]
            self._scan = 0
            if chunk:
                chunks.append(chunk)
                self.chunks_emitted += 1
        return chunks

    def flush(self) -> str | None:
        """Whatever is left, as the last chunk; None when nothing speakable is left."""
        chunk = self._buffer.strip()
        self._buffer = ""
        self._scan = 0
        if not chunk:
            return None
        self.chunks_emitted += 1
        return chunk

    def _find_cut(self) -> int | None:
        """The index just after the next cut, or None when more text is needed to find one."""
        buffer = self._buffer
        length = len(buffer)
        first = self.chunks_emitted == 0
        i = self._scan
        while i < length:
            if i >= self.max_chars:
                return self._forced_cut()
            char = buffer[i]
            if char in _TERMINATORS:
                end = i + 1
                while end < length and buffer[end] in _TERMINATORS:
                    end += 1
                run = end - i
                while end < length and buffer[end] in _CLOSERS:
                    end += 1
                if end == length:
                    self._scan = i  # undecided until we see what follows
                    return None
                if buffer[end].isspace():
                    if char != "." or run > 1:
                        return end
                    verdict = self._period_ends_sentence(i, end)
                    if verdict is None:
                        self._scan = i
                        return None
                    if verdict:
                        return end
                i = end
                continue
            if char == "\n" and buffer[:i].strip():
                return i + 1
            if first and (char in _CLAUSE_MARKS or char in _DASHES or char == "-"):
                if i + 1 == length:
                    self._scan = i
                    return None
                spaced_hyphen = char == "-" and i > 0 and buffer[i - 1] == " " and buffer[i + 1].isspace()
                clause_mark = (char in _CLAUSE_MARKS and buffer[i + 1].isspace()) or char in _DASHES or spaced_hyphen
                if clause_mark and len(buffer[:i].split()) >= self.min_clause_words:
                    return i + 1
            i += 1
        self._scan = length
        return None

    def _period_ends_sentence(self, dot: int, end: int) -> bool | None:
        """Whether the period at `dot` (whitespace at `end`) ends a sentence; None if the next word is needed."""
        buffer = self._buffer
        start = dot
        while start > 0 and not buffer[start - 1].isspace():
            start -= 1
        word = buffer[start:dot].lstrip(_OPENERS).lower()
        if not word:
            return True
        if word in _TITLES or (len(word) == 1 and word.isalpha() and word != "i"):
            return False
        if word in _SOFT_ABBREVIATIONS or word in _NUMBER_ABBREVIATIONS:
            following = end
            while following < len(buffer) and buffer[following].isspace():
                following += 1
            if following == len(buffer):
                return None
            if word in _NUMBER_ABBREVIATIONS:
                return not buffer[following].isdigit()
            return buffer[following].isupper()
        return True

    def _forced_cut(self) -> int:
        window = self._buffer[: self.max_chars]
        for mark in (", ", "; ", " "):
            at = window.rfind(mark)
            if at > 0:
                return at + 1
        return self.max_chars
