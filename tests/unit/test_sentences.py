"""The sentence aggregator: a clause first, whole sentences after, never a cut inside a number or a title."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streaming.sentences import SentenceAggregator


def chunk(text: str, step: int = 1, **options: int) -> list[str]:
    """Feed `text` in pieces of `step` characters, as an LLM would stream it; flush at the end."""
    aggregator = SentenceAggregator(**options)
    chunks: list[str] = []
    for start in range(0, len(text), step):
        chunks += aggregator.feed(text[start : start + step])
    if (rest := aggregator.flush()) is not None:
        chunks.append(rest)
    return chunks


def test_the_first_chunk_is_a_clause_later_ones_whole_sentences() -> None:
    text = "We're open from nine, Monday to Friday, and on Saturday mornings. See you then, bye."
    assert chunk(text) == ["We're open from nine,", "Monday to Friday, and on Saturday mornings.", "See you then, bye."]


def test_a_clause_needs_three_words() -> None:
    assert chunk("Sure, we open at nine tomorrow, and close at five.") == [
        "Sure, we open at nine tomorrow,",
        "and close at five.",
    ]


@pytest.mark.parametrize("mark", [";", ":"])
def test_semicolons_and_colons_end_a_first_clause(mark: str) -> None:
    assert chunk(f"Here is what I found{mark} two slots on Monday.") == [
        f"Here is what I found{mark}",
        "two slots on Monday.",
    ]


@pytest.mark.parametrize("dash", [" - ", "\u2014", " \u2013 "])
def test_dashes_end_a_first_clause(dash: str) -> None:
    chunks = chunk(f"The clinic on Oak Street{dash}the one by the park. Yes.")
    assert len(chunks) == 3
    assert chunks[0].startswith("The clinic on Oak Street")
    assert chunks[1].endswith("the one by the park.")


def test_a_hyphenated_word_is_not_a_dash() -> None:
    assert chunk("Your follow-up visit is booked. Thanks.") == ["Your follow-up visit is booked.", "Thanks."]


@pytest.mark.parametrize(
    "text",
    [
        "Your appointment is at 3.30 on Monday.",
        "That comes to $1,250.75 in total.",
        "Dr. Smith will see you on Monday.",
        "Mr. and Mrs. Jones are booked.",
        "Bring a photo ID e.g. your license.",
        "Our U.S. office is closed today.",
        "Ask for J. Smith at the desk.",
        "Room No. 5 is on the left.",
        "Visit www.example.com for the forms.",
    ],
)
def test_never_cut_inside_numbers_or_abbreviations(text: str) -> None:
    assert chunk(text + " Anything else?") == [text, "Anything else?"]


def test_soft_abbreviations_end_a_sentence_only_before_a_capital() -> None:
    assert chunk("We open at 9 a.m. on weekdays. Bye.") == ["We open at 9 a.m. on weekdays.", "Bye."]
    assert chunk("We open at 9 a.m. Is that early?") == ["We open at 9 a.m.", "Is that early?"]
    assert chunk("The answer is no. Thanks for asking.") == ["The answer is no.", "Thanks for asking."]


def test_questions_exclamations_ellipses_and_quotes() -> None:
    assert chunk('Is Monday fine? Great! Let me see... done. He said "yes." Then we left.') == [
        "Is Monday fine?",
        "Great!",
        "Let me see...",
        "done.",
        'He said "yes."',
        "Then we left.",
    ]


def test_a_newline_ends_a_chunk() -> None:
    assert chunk("First option\nSecond option") == ["First option", "Second option"]


def test_a_terminator_waits_for_what_follows() -> None:
    aggregator = SentenceAggregator()
    assert aggregator.feed("It is at 3.") == []  # 3.30 or the end of a sentence: not known yet
    assert aggregator.feed("30 today.") == []
    assert aggregator.feed(" Bye") == ["It is at 3.30 today."]
    assert aggregator.flush() == "Bye"
    assert aggregator.flush() is None


def test_flush_of_nothing_is_none() -> None:
    aggregator = SentenceAggregator()
    assert aggregator.feed("") == []
    assert aggregator.feed("   ") == []
    assert aggregator.flush() is None


def test_a_sentence_that_never_ends_is_cut_near_max_chars() -> None:
    text = ", ".join(f"slot {n}" for n in range(100))
    chunks = chunk(text, max_chars=80)
    assert all(len(part) <= 80 for part in chunks)
    assert "".join(chunks).replace(" ", "") == text.replace(" ", "")


def test_a_reply_without_punctuation_comes_out_whole_at_the_end() -> None:
    assert chunk("okay see you then") == ["okay see you then"]


def test_min_clause_words_must_be_positive() -> None:
    with pytest.raises(ValueError, match="min_clause_words"):
        SentenceAggregator(min_clause_words=0)


_ALPHABET = st.sampled_from([*list("abc xyz.,;:!?-—'\"0123456789\n"), "Dr.", " a.m.", "3.30", " No. 5", "..."])
_TEXTS = st.lists(_ALPHABET, max_size=120).map("".join)


@given(text=_TEXTS, steps=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=8))
def test_chunks_do_not_depend_on_how_the_text_was_streamed(text: str, steps: list[int]) -> None:
    whole = chunk(text, step=max(1, len(text)))
    aggregator = SentenceAggregator()
    pieces: list[str] = []
    position = 0
    index = 0
    while position < len(text):
        size = steps[index % len(steps)]
        pieces += aggregator.feed(text[position : position + size])
        position += size
        index += 1
    if (rest := aggregator.flush()) is not None:
        pieces.append(rest)
    assert pieces == whole


@given(text=_TEXTS)
def test_no_text_is_lost_or_added(text: str) -> None:
    chunks = chunk(text, step=3, max_chars=40)
    assert "".join(chunks).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")
    assert all(part == part.strip() and part for part in chunks)
