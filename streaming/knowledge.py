"""An agent's knowledge base: its files cut into passages and indexed with BM25 at start.

The agent's `knowledge_search` says how the LLM gets it:
- "every_turn": the best passages for the caller's turn go into that request's context as a system
  message (not into the history: the next turn gets its own). Retrieval runs on the turn's text before
  the LLM request, so it is on the latency path: BM25 over a few hundred passages is well under a
  millisecond (`make bench`, "providers" → "knowledge").
- "tool": the LLM gets a `search_knowledge_base` tool and calls it when it wants to; answered here in
  the service, since a read of the agent's own files needs no policy and no Lambda round trip.

Passages are a Markdown section each (its heading kept as context), split into windows of at most
PASSAGE_WORDS words when a section is long. BM25 over passages of a few sentences suits phone questions
("where do I park", "are you open on Saturday"): they share words with the section that answers them.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import bm25s
import Stemmer

from switchboard.agent import AgentConfig

PASSAGE_WORDS: Final = 120
# Enough to answer one question; more passages only lengthen the prompt (and the first token's wait).
PASSAGES_PER_TURN: Final = 2
SEARCH_TOOL: Final = "search_knowledge_base"
_HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")
_STOPWORDS: Final = "en"
# Snowball English: "park" finds "parking", "vaccination" finds "vaccinations".
_STEMMER: Final = Stemmer.Stemmer("english")


@dataclass(frozen=True, slots=True)
class Passage:
    source: str  # the file's name, for the LLM and the logs
    heading: str
    text: str

    def render(self) -> str:
        return f"{self.heading}: {self.text}" if self.heading else self.text


def passages_of(source: str, markdown: str, max_words: int = PASSAGE_WORDS) -> list[Passage]:
    """A file's passages: one per section under its nearest heading, long sections cut into windows."""
    passages: list[Passage] = []
    heading = ""
    body: list[str] = []

    def close_section() -> None:
        words = " ".join(body).split()
        for start in range(0, len(words), max_words):
            passages.append(Passage(source, heading, " ".join(words[start : start + max_words])))
        body.clear()

    for line in markdown.splitlines():
        match = _HEADING.match(line)
        if match:
            close_section()
            heading = match.group(2)
        elif line.strip():
            body.append(line.strip())
    close_section()
    return passages


class KnowledgeBase:
    """One agent's passages and their BM25 index."""

    def __init__(self, passages: Iterable[Passage]) -> None:
        self.passages = list(passages)
        if not self.passages:
            raise ValueError("a knowledge base needs at least one passage")
        corpus = [f"{passage.heading} {passage.text}" for passage in self.passages]
        self._index = bm25s.BM25()
        tokens = bm25s.tokenize(corpus, stopwords=_STOPWORDS, stemmer=_STEMMER, show_progress=False)
        self._index.index(tokens, show_progress=False)
        self._vocabulary: Mapping[str, int] = self._index.vocab_dict

    @classmethod
    def of_files(cls, files: Iterable[Path]) -> "KnowledgeBase":
        passages: list[Passage] = []
        for file in files:
            passages.extend(passages_of(file.name, file.read_text(encoding="utf-8")))
        return cls(passages)

    def search(self, query: str, k: int = PASSAGES_PER_TURN) -> list[Passage]:
        """The best `k` passages sharing at least one word with `query`, best first; [] when none does."""
        terms = [
            term
            for term in bm25s.tokenize(
                query, stopwords=_STOPWORDS, stemmer=_STEMMER, return_ids=False, show_progress=False
            )[0]
            if term in self._vocabulary
        ]
        if not terms:
            return []
        k = min(k, len(self.passages))
        indices, scores = self._index.retrieve([terms], k=k, show_progress=False, n_threads=1)
        return [self.passages[int(i)] for i, score in zip(indices[0], scores[0], strict=True) if score > 0]


def context_message(passages: list[Passage]) -> str:
    """The system message that carries a turn's passages to the LLM."""
    intro = "Knowledge base passages that may answer the caller's last turn (ignore them if they do not):"
    return f"{intro}\n{_numbered(passages)}"


def search_result(passages: list[Passage]) -> str:
    """What the search tool answers the LLM: the passages, or that nothing matched (so it does not guess)."""
    if not passages:
        return "Nothing in the knowledge base matches. Say you are not sure rather than guessing."
    return _numbered(passages)


def _numbered(passages: list[Passage]) -> str:
    return "\n".join(f"[{n}] {passage.render()}" for n, passage in enumerate(passages, 1))


def search_tool_schema() -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": SEARCH_TOOL,
            "description": "Search the business's knowledge base (hours, address, services, prices, policies). "
            "Call it before answering a factual question about the business.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "The caller's question, in a few words."}},
                "required": ["query"],
                "additionalProperties": False,
            },
        },
    }


def load_knowledge(agents: Iterable[AgentConfig]) -> dict[str, KnowledgeBase]:
    """Every agent's knowledge base that has files, indexed; a file that cannot be read fails the start."""
    return {agent.id: KnowledgeBase.of_files(agent.knowledge_base) for agent in agents if agent.knowledge_base}
