"""The parts of switchboard.tool_actions without I/O: the LLM's tool schemas, the argument models and the
idempotency key."""

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from switchboard.agent import AgentConfig, load_agent
from switchboard.tool import ToolName, ToolRequest
from switchboard.tool_actions import (
    MAX_ARGUMENTS_CHARS,
    BadArguments,
    BookAppointmentArguments,
    SendSmsArguments,
    ToolCall,
    canonical_arguments,
    tool_schemas,
)

REPO = Path(__file__).resolve().parents[2]
SID = "CA" + "0123456789abcdef" * 2


def agent(name: str) -> AgentConfig:
    return load_agent(REPO / "agents" / f"{name}.yaml")


def functions(schemas: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    assert all(schema["type"] == "function" for schema in schemas)
    return {schema["function"]["name"]: schema["function"] for schema in schemas}


def walk(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return [node, *(found for value in node.values() for found in walk(value))]
    if isinstance(node, list):
        return [found for value in node for found in walk(value)]
    return []


def test_the_receptionist_gets_its_four_tools_in_openai_function_format() -> None:
    schemas = tool_schemas(agent("clinic-receptionist"))

    tools = functions(schemas)
    assert list(tools) == ["book_appointment", "send_sms", "transfer_call", "end_call"]
    json.dumps(schemas)  # goes over the wire as it is
    book = tools["book_appointment"]
    assert book["parameters"]["required"] == ["start", "name"]
    assert book["parameters"]["additionalProperties"] is False
    assert book["parameters"]["properties"]["reason"] == {
        "type": "string",
        "maxLength": 200,
        "description": "The reason for the visit, in a few words.",
    }
    assert "America/New_York" in book["description"]
    assert "One appointment per call." in book["description"]
    assert tools["transfer_call"]["parameters"]["properties"]["to"]["enum"] == ["front_desk"]
    assert "At most 2 per call." in tools["send_sms"]["description"]
    assert tools["send_sms"]["parameters"]["properties"] == {
        "body": {
            "type": "string",
            "minLength": 1,
            "maxLength": 480,
            "description": "The text of the message, in plain words.",
        }
    }
    assert not any("title" in node for node in walk([tool["parameters"] for tool in tools.values()]))
    assert not any("anyOf" in node for node in walk(schemas))


def test_the_reminder_agent_has_no_transfer_and_its_booking_moves_the_appointment() -> None:
    tools = functions(tool_schemas(agent("appointment-reminder")))

    assert list(tools) == ["book_appointment", "send_sms", "end_call"]
    assert "moves it to the new time" in tools["book_appointment"]["description"]
    assert "At most 1 per call." in tools["send_sms"]["description"]


def test_an_agent_without_tools_gets_none() -> None:
    bare = agent("clinic-receptionist").model_copy(update={"tools": AgentConfig.model_fields["tools"].default})

    assert tool_schemas(bare) == []


@pytest.mark.parametrize(
    "arguments",
    [
        {"body": "hi", "to": "+15550001111"},
        {"body": ""},
        {"body": "x" * 481},
        {},
    ],
)
def test_sms_arguments_take_a_body_and_nothing_else(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SendSmsArguments.model_validate(arguments)


def test_booking_arguments_read_an_iso_start_and_strip_names() -> None:
    parsed = BookAppointmentArguments.model_validate({"start": "2026-03-03T10:30", "name": "  Jane Doe "})

    assert (parsed.start, parsed.name, parsed.reason) == ("2026-03-03T10:30", "Jane Doe", None)
    with pytest.raises(ValidationError, match="not an ISO 8601 date and time"):
        BookAppointmentArguments.model_validate({"start": "Tuesday at ten", "name": "Jane"})


def test_equal_arguments_make_one_key_whatever_their_order() -> None:
    first = ToolCall.of(ToolName.SEND_SMS, ToolRequest(call_sid=SID, arguments={"a": 1, "b": {"y": 2, "x": "é"}}))
    second = ToolCall.of(ToolName.SEND_SMS, ToolRequest(call_sid=SID, arguments={"b": {"x": "é", "y": 2}, "a": 1}))
    other_tool = ToolCall.of(ToolName.END_CALL, ToolRequest(call_sid=SID, arguments={"a": 1, "b": {"y": 2, "x": "é"}}))

    assert first == second
    assert first.arguments == '{"a":1,"b":{"x":"é","y":2}}'
    assert first.invocation_id == second.invocation_id
    assert len({first.invocation_id, other_tool.invocation_id}) == 2


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"body": float("nan")}, "plain JSON"),
        ({"body": "x" * MAX_ARGUMENTS_CHARS}, "longer than"),
        ({"a": [[[[[[[[[1]]]]]]]]]}, "nested deeper"),
    ],
)
def test_arguments_no_tool_could_take_are_refused_before_anything(arguments: dict[str, Any], problem: str) -> None:
    with pytest.raises(BadArguments, match=problem):
        canonical_arguments(arguments)
