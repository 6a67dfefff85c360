"""BedrockLanguageModel's requests and errors through botocore's Stubber on a real bedrock-runtime client.

Stubber checks the exact converse_stream parameters (and validates them against the service model) and
raises modelled errors, with no network. It cannot return converse_stream's event stream (it validates a
stubbed `stream` as a dict, and the code iterates an EventStream), so the streamed answers are tested
over the real wire format in tests/integration/test_bedrock_llm.py.
"""

import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from botocore.stub import Stubber

from streaming.providers.base import LanguageModelError, ReplyDeadlines
from streaming.providers.bedrock import (
    CALL_CONNECTED,
    BedrockLanguageModel,
    bedrock_runtime_client,
    converse_messages,
    tool_configuration,
)
from switchboard.agent import LanguageModel as LanguageModelSettings
from switchboard.agent import load_agent
from switchboard.state import ChatMessage
from switchboard.tool_actions import tool_schemas

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime.client import BedrockRuntimeClient

REPO = Path(__file__).resolve().parents[2]
MODEL = "us.amazon.nova-lite-v1:0"
SETTINGS = LanguageModelSettings(provider="bedrock", model=MODEL, temperature=0.4, max_tokens=150)
DEADLINES = ReplyDeadlines(first_token_s=5.0, first_token_budget_s=10.0, total_s=20.0)
BOOKING = json.dumps({"start": "2026-11-24T10:30", "name": "Ada"})


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


SYSTEM = [{"text": "You are the receptionist of a clinic."}, {"text": "Relevant passages: parking is free."}]
HISTORY = [
    ChatMessage(role="system", content="You are the receptionist of a clinic."),
    ChatMessage(role="system", content="Relevant passages: parking is free."),
    ChatMessage(role="assistant", content="Hello, how can I help?"),
    ChatMessage(role="user", content="Book me for Tuesday at half ten, and text me."),
    ChatMessage(
        role="assistant",
        content="Booking that now.",
        tool_calls=[call("t1", "book_appointment", BOOKING), call("t2", "send_sms", '{"text": "Tuesday 10:30"}')],
    ),
    ChatMessage(role="tool", tool_call_id="t1", name="book_appointment", content='{"outcome": "succeeded"}'),
    ChatMessage(role="tool", tool_call_id="t2", name="send_sms", content='{"outcome": "refused"}'),
    ChatMessage(role="assistant", content=None),  # cut before a word was heard
    ChatMessage(role="user", content="Thanks."),
]
EXPECTED_MESSAGES = [
    {"role": "user", "content": [{"text": CALL_CONNECTED}]},
    {"role": "assistant", "content": [{"text": "Hello, how can I help?"}]},
    {"role": "user", "content": [{"text": "Book me for Tuesday at half ten, and text me."}]},
    {
        "role": "assistant",
        "content": [
            {"text": "Booking that now."},
            {"toolUse": {"toolUseId": "t1", "name": "book_appointment", "input": json.loads(BOOKING)}},
            {"toolUse": {"toolUseId": "t2", "name": "send_sms", "input": {"text": "Tuesday 10:30"}}},
        ],
    },
    {
        "role": "user",
        "content": [
            {"toolResult": {"toolUseId": "t1", "content": [{"text": '{"outcome": "succeeded"}'}]}},
            {"toolResult": {"toolUseId": "t2", "content": [{"text": '{"outcome": "refused"}'}]}},
            {"text": "Thanks."},
        ],
    },
]


@pytest.fixture
def client(aws_env: None) -> "BedrockRuntimeClient":
    return bedrock_runtime_client("us-east-1")


@pytest.fixture
def stubber(client: "BedrockRuntimeClient") -> Iterator[Stubber]:
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


def schemas() -> list[dict[str, Any]]:
    return tool_schemas(load_agent(REPO / "agents" / "clinic-receptionist.yaml"))


async def drain(llm: BedrockLanguageModel, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]]) -> None:
    async for _ in llm.reply(messages, tools):
        pass


async def test_the_request_is_converse_shaped(client: "BedrockRuntimeClient", stubber: Stubber) -> None:
    tools = schemas()
    expected = {
        "modelId": MODEL,
        "messages": EXPECTED_MESSAGES,
        "system": SYSTEM,
        "inferenceConfig": {"maxTokens": 150, "temperature": 0.4},
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": tool["function"]["name"],
                        "description": tool["function"]["description"],
                        "inputSchema": {"json": tool["function"]["parameters"]},
                    }
                }
                for tool in tools
            ]
        },
    }
    # Stubber checks the parameters against `expected` and the service model, then answers with an error.
    stubber.add_client_error("converse_stream", "ValidationException", "Malformed input", 400, expected_params=expected)

    with pytest.raises(LanguageModelError, match=r"rejected the request \(ValidationException: Malformed input\)"):
        await drain(BedrockLanguageModel(client, SETTINGS, deadlines=DEADLINES), HISTORY, tools)


async def test_without_tools_there_is_no_tool_configuration(client: "BedrockRuntimeClient", stubber: Stubber) -> None:
    messages = [ChatMessage(role="user", content="Hi.")]
    expected = {
        "modelId": MODEL,
        "messages": [{"role": "user", "content": [{"text": "Hi."}]}],
        "inferenceConfig": {"maxTokens": 150, "temperature": 0.4},
    }
    stubber.add_client_error("converse_stream", "AccessDeniedException", "No access", 403, expected_params=expected)

    with pytest.raises(LanguageModelError, match="AccessDeniedException: No access"):
        await drain(BedrockLanguageModel(client, SETTINGS, deadlines=DEADLINES), messages, [])


async def test_throttling_is_retried_once_then_an_error(client: "BedrockRuntimeClient", stubber: Stubber) -> None:
    stubber.add_client_error("converse_stream", "ThrottlingException", "Too many requests", 429)
    stubber.add_client_error("converse_stream", "ThrottlingException", "Still too many", 429)

    with pytest.raises(LanguageModelError, match="failed after a retry: ThrottlingException: Still too many"):
        await drain(BedrockLanguageModel(client, SETTINGS, deadlines=DEADLINES), HISTORY, [])


async def test_a_model_timeout_then_a_rejection_stops_at_the_rejection(
    client: "BedrockRuntimeClient", stubber: Stubber
) -> None:
    stubber.add_client_error("converse_stream", "ModelTimeoutException", "The model timed out", 408)
    stubber.add_client_error("converse_stream", "ValidationException", "Too many tokens", 400)

    with pytest.raises(LanguageModelError, match="ValidationException: Too many tokens"):
        await drain(BedrockLanguageModel(client, SETTINGS, deadlines=DEADLINES), HISTORY, [])


# -- the conversions on their own -------------------------------------------------------------------------


def test_the_history_becomes_alternating_messages_starting_with_the_user() -> None:
    system, messages = converse_messages(HISTORY)

    assert system == [
        {"text": "You are the receptionist of a clinic."},
        {"text": "Relevant passages: parking is free."},
    ]
    assert messages == EXPECTED_MESSAGES
    roles = [message["role"] for message in messages]
    assert all(a != b for a, b in itertools.pairwise(roles))


def test_arguments_that_are_not_a_json_object_become_an_empty_input() -> None:
    history = [
        ChatMessage(role="user", content="Bye."),
        ChatMessage(role="assistant", tool_calls=[call("t1", "end_call", "{not json"), call("t2", "end_call", "[]")]),
        ChatMessage(role="tool", tool_call_id="t1", content='{"outcome": "refused"}'),
        ChatMessage(role="tool", tool_call_id="t2", content=""),
    ]

    _, messages = converse_messages(history)

    assert messages[1]["content"] == [
        {"toolUse": {"toolUseId": "t1", "name": "end_call", "input": {}}},
        {"toolUse": {"toolUseId": "t2", "name": "end_call", "input": {}}},
    ]
    assert messages[2]["content"][1] == {"toolResult": {"toolUseId": "t2", "content": [{"text": "{}"}]}}


def test_malformed_history_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no tool_call_id"):
        converse_messages([ChatMessage(role="tool", content="{}")])
    with pytest.raises(ValueError, match="not in chat-completion format"):
        converse_messages([ChatMessage(role="assistant", tool_calls=[{"id": "t1"}])])


def test_tool_schemas_become_tool_specs() -> None:
    assert tool_configuration([]) is None
    parameterless = {"type": "function", "function": {"name": "end_call"}}
    assert tool_configuration([parameterless]) == {
        "tools": [{"toolSpec": {"name": "end_call", "inputSchema": {"json": {"type": "object", "properties": {}}}}}]
    }
    with pytest.raises(ValueError, match="not an OpenAI function tool"):
        tool_configuration([{"type": "code_interpreter"}])
