"""The OpenAI adapter's history conversion and the reply deadlines, without a server (the streaming itself is
tested against a local OpenAI-compatible server in tests/integration/test_openai_llm.py)."""

import pytest

from streaming.providers.base import ReplyDeadlines
from streaming.providers.openai_llm import chat_messages
from switchboard.state import ChatMessage


def test_malformed_history_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no tool_call_id"):
        chat_messages([ChatMessage(role="tool", content="{}")])
    with pytest.raises(ValueError, match="not in chat-completion format"):
        chat_messages([ChatMessage(role="assistant", tool_calls=[{"id": "call_1", "type": "function"}])])


def test_an_assistant_message_with_nothing_in_it_is_left_out() -> None:
    history = [ChatMessage(role="user", content="Hello?"), ChatMessage(role="assistant", content="")]

    assert chat_messages(history) == [{"role": "user", "content": "Hello?"}]


@pytest.mark.parametrize(("first_token_s", "budget_s", "total_s"), [(0.0, 1.0, 2.0), (2.0, 1.0, 5.0), (1.0, 3.0, 2.0)])
def test_deadlines_must_be_ordered(first_token_s: float, budget_s: float, total_s: float) -> None:
    with pytest.raises(ValueError, match="first_token_s <= first_token_budget_s <= total_s"):
        ReplyDeadlines(first_token_s=first_token_s, first_token_budget_s=budget_s, total_s=total_s)


def test_a_retry_fits_only_while_its_first_token_could_come_within_the_budget() -> None:
    deadlines = ReplyDeadlines()  # 2.5 s per attempt, 5.5 s budget

    assert deadlines.retry_fits(started=100.0, now=100.2)  # a quick 5xx
    assert deadlines.retry_fits(started=100.0, now=102.5)  # a first-token timeout
    assert not deadlines.retry_fits(started=100.0, now=103.5)  # a slow failure: the apology instead
