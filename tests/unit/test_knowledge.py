"""Knowledge-base passages and BM25 retrieval (streaming/knowledge.py)."""

from pathlib import Path

import pytest

from streaming.knowledge import (
    KnowledgeBase,
    Passage,
    context_message,
    load_knowledge,
    passages_of,
    search_result,
)
from switchboard.agent import load_agent

REPO = Path(__file__).resolve().parents[2]

CLINIC = """# Clinic

Welcome text before any section.

## Address and parking
Free parking is behind the building.
The entrance is on the parking side.

## Opening hours
Monday to Friday 8:30 am to 5:30 pm. Closed on weekends.

## Vaccinations
Flu and tetanus vaccinations every morning.
"""


def test_one_passage_per_section_under_its_heading() -> None:
    passages = passages_of("clinic.md", CLINIC)
    assert [passage.heading for passage in passages] == [
        "Clinic",
        "Address and parking",
        "Opening hours",
        "Vaccinations",
    ]
    assert passages[1].text == "Free parking is behind the building. The entrance is on the parking side."
    assert passages[1].render() == "Address and parking: " + passages[1].text
    assert {passage.source for passage in passages} == {"clinic.md"}


def test_a_long_section_is_cut_into_windows_that_keep_the_heading() -> None:
    words = " ".join(f"w{n}" for n in range(25))
    passages = passages_of("long.md", f"## Long\n{words}\n", max_words=10)
    assert [len(passage.text.split()) for passage in passages] == [10, 10, 5]
    assert {passage.heading for passage in passages} == {"Long"}
    assert " ".join(passage.text for passage in passages) == words


def test_text_before_any_heading_is_a_passage_without_one() -> None:
    (passage,) = passages_of("faq.md", "Open nine to five.\n")
    assert passage == Passage("faq.md", "", "Open nine to five.")
    assert passage.render() == "Open nine to five."


@pytest.mark.parametrize(
    ("question", "heading"),
    [
        ("Where can I park?", "Address and parking"),  # "park" finds "parking": stemmed
        ("Do you do a flu vaccination?", "Vaccinations"),
        ("Are you open on Monday?", "Opening hours"),
    ],
)
def test_the_best_passage_first(question: str, heading: str) -> None:
    base = KnowledgeBase(passages_of("clinic.md", CLINIC))
    assert base.search(question)[0].heading == heading


def test_no_shared_word_finds_nothing_rather_than_something() -> None:
    base = KnowledgeBase(passages_of("clinic.md", CLINIC))
    assert base.search("hello there") == []
    assert base.search("") == []
    assert base.search("xylophone quantum") == []


def test_at_most_k_passages_and_never_more_than_there_are() -> None:
    base = KnowledgeBase(passages_of("clinic.md", CLINIC))
    assert len(base.search("parking flu monday", k=2)) == 2
    assert len(base.search("parking flu monday clinic welcome", k=10)) <= len(base.passages)


def test_an_empty_knowledge_base_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one passage"):
        KnowledgeBase([])


def test_what_the_llm_is_given() -> None:
    found = [Passage("a.md", "Hours", "Nine to five."), Passage("a.md", "", "Cash only.")]
    assert context_message(found).endswith("[1] Hours: Nine to five.\n[2] Cash only.")
    assert search_result(found) == "[1] Hours: Nine to five.\n[2] Cash only."
    assert "not sure" in search_result([])


def test_the_shipped_agents_knowledge_is_loaded_and_searchable() -> None:
    clinic = load_agent(REPO / "agents" / "clinic-receptionist.yaml")
    bases = load_knowledge([clinic])
    assert bases["clinic-receptionist"].search("Is there parking?")[0].heading == "Address and parking"
