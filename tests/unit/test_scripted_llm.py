"""The scripted language model: flow matching, tool calls, what it says after a tool, fallback, determinism."""

import json
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from streaming.providers.base import LlmEvent, TextDelta, ToolCall
from streaming.providers.scripted import REFUSED_PREFIX, ScriptedLanguageModel, words
from switchboard.agent import AgentConfig, load_agent
from switchboard.state import ChatMessage
from switchboard.tool import ToolName
from switchboard.tool_actions import TOOL_ARGUMENTS

AGENTS = Path(__file__).resolve().parents[2] / "agents"
TUESDAY_24_NOV_2026 = date(2026, 11, 24)


def _clinic() -> AgentConfig:
    return load_agent(AGENTS / "clinic-receptionist.yaml")


def _agent(flow: list[dict[str, Any]], **llm: Any) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "id": "front",
            "name": "Front desk",
            "directions": ["inbound"],
            "voice": {"id": "Joanna"},
            "greeting": "Hello.",
            "system_prompt": "Be brief.",
            "phone_numbers": ["+15550100200"],
            "llm": {"provider": "scripted", "flow": flow, **llm},
            "tools": {"end_call": {}, "transfer_call": {"allow": {"front_desk": "+15550100100"}}},
        }
    )


def _model(agent: AgentConfig | None = None) -> ScriptedLanguageModel:
    return ScriptedLanguageModel(agent or _clinic(), today=lambda: TUESDAY_24_NOV_2026)


def _user(text: str) -> list[ChatMessage]:
    return [
        ChatMessage(role="system", content="You are Ava."),
        ChatMessage(role="assistant", content="How can I help you today?"),
        ChatMessage(role="user", content=text),
    ]


async def _events(model: ScriptedLanguageModel, messages: Sequence[ChatMessage]) -> list[LlmEvent]:
    return [event async for event in model.reply(messages, [])]


def _text(events: Sequence[LlmEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def _calls(events: Sequence[LlmEvent]) -> list[ToolCall]:
    return [event for event in events if isinstance(event, ToolCall)]


def _after_tool(said: str, call: ToolCall, result: dict[str, Any]) -> list[ChatMessage]:
    asked = {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
    return [
        *_user(said),
        ChatMessage(role="assistant", content=None, tool_calls=[asked]),
        ChatMessage(role="tool", tool_call_id=call.call_id, name=call.name, content=json.dumps(result)),
    ]


def test_words_ignore_case_and_punctuation() -> None:
    assert words("Hi, I'd like to BOOK a check-up. [keypad] 4 2 #") == (
        "hi",
        "i'd",
        "like",
        "to",
        "book",
        "a",
        "check",
        "up",
        "keypad",
        "4",
        "2",
    )


@pytest.mark.parametrize(
    ("said", "expected_say"),
    [
        ("Hi, I'd like to BOOK an appointment, please.", "Which day and time"),
        ("What are your opening hours?", "We are open Monday to Wednesday"),
        ("Tuesday at ten would be great. My name is Sam.", "Let me book Tuesday"),
        ("Perfect, thank you. Bye!", "Goodbye!"),
        ("i would like to book an appointment on tuesday morning", "Let me book Tuesday"),  # first match wins
        ("[keypad] 0", "put you through"),  # DTMF comes as user text
    ],
)
def test_the_first_step_with_a_phrase_in_the_latest_turn_is_taken(said: str, expected_say: str) -> None:
    selected = _model().step_for(said)
    assert selected is not None
    assert selected[1].say is not None
    assert expected_say in selected[1].say


def test_phrases_match_whole_words_in_order() -> None:
    model = _model(
        _agent(
            [
                {"when": ["book"], "say": "Booking."},
                {"when": ["that's all"], "say": "Bye."},
            ]
        )
    )
    assert model.step_for("the bookshop is closed") is None  # not a word of its own
    assert model.step_for("all that is") is None
    selected = model.step_for("All right, THAT'S ALL.")
    assert selected is not None
    assert selected[0] == 1
    selected = model.step_for("can I book?")
    assert selected is not None
    assert selected[0] == 0


async def test_a_reply_streams_small_text_deltas_then_the_tool_call_with_json_arguments() -> None:
    events = await _events(_model(), _user("Tuesday at ten in the morning, please."))
    deltas = [event for event in events if isinstance(event, TextDelta)]
    assert len(deltas) > 5
    assert all(len(delta.text.strip()) <= 4 for delta in deltas)
    assert _text(events) == "Let me book Tuesday at ten in the morning for you."
    assert isinstance(events[-1], ToolCall)
    assert _calls(events) == [events[-1]]
    call = events[-1]
    assert call.name == ToolName.BOOK_APPOINTMENT.value
    # {next:tue} on Tuesday 24 November is the Tuesday after it.
    assert json.loads(call.arguments) == {"start": "2026-12-01T10:00", "name": "Sam Taylor", "reason": "check-up"}


async def test_after_a_successful_tool_it_says_the_steps_then() -> None:
    model = _model()
    said = "Tuesday at ten in the morning, please."
    (call,) = _calls(await _events(model, _user(said)))
    events = await _events(model, _after_tool(said, call, {"outcome": "succeeded", "message": "Booked.", "data": {}}))
    assert _calls(events) == []
    assert _text(events) == "You're booked for Tuesday at ten in the morning. Is there anything else I can help with?"


async def test_after_a_refused_tool_it_apologizes_with_the_results_message() -> None:
    model = _model()
    said = "Tuesday at ten in the morning, please."
    (call,) = _calls(await _events(model, _user(said)))
    refused = {"outcome": "refused", "message": "That time is already taken; 10:30 is free.", "data": None}
    events = await _events(model, _after_tool(said, call, refused))
    assert _calls(events) == []
    assert _text(events) == f"{REFUSED_PREFIX} That time is already taken; 10:30 is free."
    unreadable = [
        *_after_tool(said, call, {})[:-1],
        ChatMessage(role="tool", tool_call_id=call.call_id, name=call.name, content="not json"),
    ]
    assert _text(await _events(model, unreadable)) == REFUSED_PREFIX


async def test_nothing_matches_gives_the_fallback() -> None:
    clinic = _clinic()
    events = await _events(_model(clinic), _user("Do you sell garden furniture?"))
    assert _calls(events) == []
    assert _text(events) == clinic.llm.fallback
    no_flow = _agent([])
    assert _text(await _events(_model(no_flow), _user("anything"))) == no_flow.llm.fallback


async def test_the_same_messages_give_the_same_events() -> None:
    messages = _user("Hello, what are your opening hours? And bye.")
    first = await _events(_model(), messages)
    assert first == await _events(_model(), messages) == await _events(_model(), list(messages))
    assert _text(first) == "Thank you for calling Maple Street Clinic. Goodbye!"  # the earlier step wins
    assert [call.name for call in _calls(first)] == ["end_call"]


async def test_the_goodbye_step_ends_the_call() -> None:
    events = await _events(_model(), _user("No, that's all. Bye!"))
    (call,) = _calls(events)
    assert call.name == ToolName.END_CALL.value
    assert json.loads(call.arguments) == {"reason": "the caller is done"}


def test_shipped_flows_call_only_the_agents_tools_with_valid_arguments() -> None:
    for path in sorted(AGENTS.glob("*.yaml")):
        agent = load_agent(path)
        assert agent.llm.flow, f"{path.name} has no scripted flow"
        for step in agent.llm.flow:
            if step.tool is None:
                continue
            assert step.tool.name in agent.tools.enabled
            TOOL_ARGUMENTS[step.tool.name].model_validate(step.tool.arguments_on(TUESDAY_24_NOV_2026))


def test_a_flow_step_is_checked_when_the_agent_loads() -> None:
    with pytest.raises(ValidationError, match="book_appointment is not among this agent's tools"):
        _agent([{"when": ["book"], "tool": {"name": "book_appointment", "arguments": {}}}])
    with pytest.raises(ValidationError, match="`then` follows a tool call"):
        _agent([{"when": ["hi"], "say": "Hello.", "then": "And?"}])
    with pytest.raises(ValidationError, match="says something, calls a tool, or both"):
        _agent([{"when": ["hi"]}])
    with pytest.raises(ValidationError, match="when"):
        _agent([{"when": ["?!"], "say": "Hm."}])


async def test_standing_in_for_a_missing_llm_it_does_not_act_for_the_caller() -> None:
    """acts=False (a deployment without an OpenAI key): no booking or SMS with the flow's made-up details;
    ending the call and handing it to the front desk remain."""
    model = ScriptedLanguageModel(_clinic(), acts=False, today=lambda: date(2026, 3, 2))
    booking = await _events(model, _user("Could I come in on Tuesday?"))
    assert _calls(booking) == []
    assert _text(booking) == _clinic().llm.fallback  # the Tuesday step is not there to take
    texting = await _events(model, _user("Please send me a text confirmation."))
    assert _calls(texting) == []
    asked = await _events(model, _user("I want to book an appointment."))  # a step that only talks
    assert _calls(asked) == []
    assert "Which day" in _text(asked)
    (goodbye,) = _calls(await _events(model, _user("That's all, bye.")))
    assert goodbye.name == ToolName.END_CALL.value
    (transfer,) = _calls(await _events(model, _user("Can I talk to someone at the front desk?")))
    assert transfer.name == ToolName.TRANSFER_CALL.value
