"""Polly's request text: SSML escaping and the split of long text; the retry backoff's bounds."""

import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.providers.polly import MAX_SSML_CHARS, RetryPolicy, escape_ssml, ssml_documents


def _spoken(document: str) -> str:
    root = ET.fromstring(document)  # noqa: S314 - our own output
    assert root.tag == "speak"
    assert len(root) == 0, "the text must not become elements"
    return root.text or ""


def test_markup_and_quotes_are_escaped() -> None:
    text = """Tom & Jerry's "deal": 3 < 4 > 2 <break time="10s"/>"""
    [document] = ssml_documents(text)
    assert document == (
        "<speak>Tom &amp; Jerry&apos;s &quot;deal&quot;: 3 &lt; 4 &gt; 2 &lt;break time=&quot;10s&quot;/&gt;</speak>"
    )
    assert _spoken(document) == text


def test_characters_xml_cannot_carry_are_dropped() -> None:
    assert escape_ssml("a\x00b\x1bc\ud800d\tok") == "abcd\tok"
    assert ssml_documents("\x01\x02 ") == []


def test_blank_text_makes_no_document() -> None:
    assert ssml_documents("") == []
    assert ssml_documents(" \n\t ") == []


def test_long_text_is_split_between_sentences() -> None:
    sentences = [f"This is sentence number {index}, which says something." for index in range(120)]
    text = " ".join(sentences)
    documents = ssml_documents(text)
    assert len(text) > MAX_SSML_CHARS
    assert len(documents) >= 2
    assert all(len(document) <= MAX_SSML_CHARS for document in documents)
    spoken = [_spoken(document) for document in documents]
    assert all(part.endswith("something.") for part in spoken), "every split is at a sentence end"
    assert " ".join(spoken) == text


def test_a_sentence_longer_than_a_request_is_split_between_words() -> None:
    text = " ".join(["word"] * 1000) + "."  # one 5000-character sentence
    documents = ssml_documents(text)
    spoken = [_spoken(document) for document in documents]
    assert len(documents) == 2
    assert all(len(document) <= MAX_SSML_CHARS for document in documents)
    assert all(not part.startswith(" ") and not part.endswith(" ") for part in spoken)
    assert " ".join(spoken) == text


def test_a_word_longer_than_a_request_is_cut_and_entities_are_never_split() -> None:
    text = "&" * 1000  # 5000 characters once escaped
    documents = ssml_documents(text)
    assert all(len(document) <= MAX_SSML_CHARS for document in documents)
    assert "".join(_spoken(document) for document in documents) == text


def test_a_limit_too_small_for_any_text_is_refused() -> None:
    with pytest.raises(ValueError, match="no room"):
        ssml_documents("hello", limit=16)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=400), st.integers(min_value=22, max_value=120))
def test_documents_keep_the_text_and_the_limit(text: str, limit: int) -> None:
    documents = ssml_documents(text, limit=limit)
    assert all(len(document) <= limit for document in documents)
    spoken = [_spoken(document) for document in documents]
    # What is said is the text itself, whitespace between the pieces aside.
    clean = re.sub("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]", "", text)
    assert re.sub(r"\s+", "", "".join(spoken)) == re.sub(r"\s+", "", clean)


def test_backoff_delays_stay_under_their_ceiling() -> None:
    policy = RetryPolicy(base_delay_s=0.1, max_delay_s=0.8)
    for retry, ceiling in enumerate([0.1, 0.2, 0.4, 0.8, 0.8, 0.8]):
        delays = [policy.delay_s(retry) for _ in range(200)]
        assert all(0.0 <= delay <= ceiling for delay in delays)
        # Jittered: not the same wait for every throttled request.
        assert len(set(delays)) > 1


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="budget_s"):
        RetryPolicy(budget_s=-1)
