"""BedrockLanguageModel through the real boto3 client against a local ConverseStream endpoint on uvicorn.

Stubber cannot return converse_stream's EventStream (tests/support/bedrock_server.py says why; the
request shapes and HTTP errors are also tested through Stubber in tests/unit/test_bedrock_llm.py), so
the events here are real event-stream bytes over HTTP, decoded by botocore as in production. Deadlines
are small so a "slow" event is slow without the suite being so; nothing here measures time.
"""

import json
import os
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import pytest

from streaming.providers.base import LanguageModelError, LlmEvent, ReplyDeadlines, TextDelta, ToolCall
from streaming.providers.bedrock import BedrockLanguageModel, bedrock_runtime_client
from streaming.providers.simulated import tokens
from switchboard.agent import LanguageModel as LanguageModelSettings
from switchboard.state import ChatMessage
from tests.support.bedrock_server import BedrockServer, Converse, HttpFailure, ToolUse, running_bedrock_server

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime.client import BedrockRuntimeClient

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
SETTINGS = LanguageModelSettings(provider="bedrock", model=MODEL, temperature=0.2, max_tokens=200)
DEADLINES = ReplyDeadlines(first_token_s=0.5, first_token_budget_s=1.5, total_s=5.0)
HISTORY = [
    ChatMessage(role="system", content="You are the receptionist of a clinic."),
    ChatMessage(role="assistant", content="Hello, how can I help?"),
    ChatMessage(role="user", content="What time do you open?"),
]
SLOW_S = 60.0
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "end_call",
            "description": "Hang up.",
            "parameters": {"type": "object", "properties": {}},
        },
    }
]


@pytest.fixture
async def server() -> AsyncIterator[BedrockServer]:
    async with running_bedrock_server() as running:
        yield running


@pytest.fixture
def client(aws_env: None, server: BedrockServer) -> "BedrockRuntimeClient":
    return bedrock_runtime_client("us-east-1", endpoint_url=server.url)


def model(client: "BedrockRuntimeClient", deadlines: ReplyDeadlines = DEADLINES) -> BedrockLanguageModel:
    return BedrockLanguageModel(client, SETTINGS, deadlines=deadlines)


async def collect(llm: BedrockLanguageModel, into: list[LlmEvent] | None = None) -> list[LlmEvent]:
    events = [] if into is None else into
    async for event in llm.reply(HISTORY, TOOLS):
        events.append(event)
    return events


def text_of(events: Sequence[LlmEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


async def test_text_streams_as_deltas_and_the_request_goes_over_the_wire(
    server: BedrockServer, client: "BedrockRuntimeClient"
) -> None:
    text = "We open at half past eight, Monday to Friday."
    server.enqueue(Converse(text))

    events = await collect(model(client))

    assert events == [TextDelta(piece) for piece in tokens(text)]
    assert server.model_ids == [MODEL]
    (body,) = server.bodies
    assert body == {
        "messages": [
            {"role": "user", "content": [{"text": "[The phone call has connected.]"}]},
            {"role": "assistant", "content": [{"text": "Hello, how can I help?"}]},
            {"role": "user", "content": [{"text": "What time do you open?"}]},
        ],
        "system": [{"text": "You are the receptionist of a clinic."}],
        "inferenceConfig": {"maxTokens": 200, "temperature": 0.2},
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "end_call",
                        "description": "Hang up.",
                        "inputSchema": {"json": {"type": "object", "properties": {}}},
                    }
                }
            ]
        },
    }
    assert server.exchanges[0].completed


async def test_tool_uses_come_whole_after_the_text(server: BedrockServer, client: "BedrockRuntimeClient") -> None:
    booking = json.dumps({"start": "2026-11-24T10:30", "name": "Ada Lovelace"})
    sms = json.dumps({"text": "See you on Tuesday at 10:30."})
    server.enqueue(
        Converse(
            "Booking that now.",
            [ToolUse("tooluse_1", "book_appointment", booking), ToolUse("tooluse_2", "send_sms", sms)],
        )
    )

    events = await collect(model(client))

    assert text_of(events) == "Booking that now."
    assert events[-2:] == [ToolCall("tooluse_1", "book_appointment", booking), ToolCall("tooluse_2", "send_sms", sms)]


async def test_throttling_is_retried_once(server: BedrockServer, client: "BedrockRuntimeClient") -> None:
    server.enqueue(HttpFailure(429, "ThrottlingException", "Too many requests"), Converse("We open at nine."))

    assert text_of(await collect(model(client))) == "We open at nine."
    assert len(server.exchanges) == 2
    assert server.bodies[0] == server.bodies[1]


async def test_throttling_twice_is_a_language_model_error(
    server: BedrockServer, client: "BedrockRuntimeClient"
) -> None:
    server.enqueue(
        HttpFailure(429, "ThrottlingException", "Too many requests"),
        HttpFailure(503, "ServiceUnavailableException", "Try later"),
        Converse("Never asked for."),
    )

    with pytest.raises(LanguageModelError, match="failed after a retry: ServiceUnavailableException: Try later"):
        await collect(model(client))
    assert len(server.exchanges) == 2


async def test_a_rejected_request_is_not_retried(server: BedrockServer, client: "BedrockRuntimeClient") -> None:
    server.enqueue(HttpFailure(403, "AccessDeniedException", "No access to the model"), Converse("Never asked for."))

    with pytest.raises(LanguageModelError, match=r"rejected the request \(AccessDeniedException: No access"):
        await collect(model(client))
    assert len(server.exchanges) == 1


async def test_an_exception_event_before_any_text_is_retried(
    server: BedrockServer, client: "BedrockRuntimeClient"
) -> None:
    server.enqueue(
        Converse("Lost.", exception_after=(0, "throttlingException", "Too many tokens")), Converse("We open at nine.")
    )

    assert text_of(await collect(model(client))) == "We open at nine."
    assert len(server.exchanges) == 2


async def test_an_exception_event_after_text_is_an_error_without_retry(
    server: BedrockServer, client: "BedrockRuntimeClient"
) -> None:
    text = "We open at half past eight."
    server.enqueue(
        Converse(text, exception_after=(2, "modelStreamErrorException", "The model stopped")),
        Converse("Never asked for."),
    )
    events: list[LlmEvent] = []

    with pytest.raises(LanguageModelError, match="modelStreamErrorException: The model stopped"):
        await collect(model(client), into=events)
    assert text_of(events) == "".join(tokens(text)[:2])
    assert len(server.exchanges) == 1


async def test_a_stream_cut_after_text_is_an_error_without_retry(
    server: BedrockServer, client: "BedrockRuntimeClient"
) -> None:
    server.enqueue(Converse("We open at half past eight.", drop_after=3), Converse("Never asked for."))
    events: list[LlmEvent] = []

    with pytest.raises(LanguageModelError, match="connection failed"):
        await collect(model(client), into=events)
    assert len(events) == 3
    assert len(server.exchanges) == 1


async def test_a_slow_first_event_is_abandoned_and_retried(
    server: BedrockServer, client: "BedrockRuntimeClient"
) -> None:
    server.enqueue(Converse("Too late.", first_event_s=SLOW_S), Converse("We open at nine."))

    assert text_of(await collect(model(client))) == "We open at nine."
    assert len(server.exchanges) == 2
    # The abandoned stream's connection was cut, not left waiting for its read timeout.
    await server.exchanges[0].disconnected.wait()


async def test_closing_the_reply_mid_stream_closes_the_request(
    server: BedrockServer, client: "BedrockRuntimeClient"
) -> None:
    text = "We open at half past eight, Monday to Friday."
    server.enqueue(Converse(text, interval_s=SLOW_S))
    replies = model(client).reply(HISTORY, TOOLS)

    first = await anext(replies)
    await replies.aclose()

    assert first == TextDelta(tokens(text)[0])
    await server.exchanges[0].disconnected.wait()
    assert not server.exchanges[0].completed


@pytest.mark.aws
@pytest.mark.skipif(not os.environ.get("BEDROCK_MODEL_ID"), reason="needs BEDROCK_MODEL_ID and AWS credentials")
async def test_the_real_service_streams_text_and_uses_a_tool() -> None:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    real = bedrock_runtime_client(region)
    llm = BedrockLanguageModel(real, LanguageModelSettings(provider="bedrock", model=os.environ["BEDROCK_MODEL_ID"]))
    system = ChatMessage(role="system", content="You are a clinic receptionist on the phone. Use tools when asked.")

    events: list[LlmEvent] = []
    async for event in llm.reply([system, ChatMessage(role="user", content="Hang up now with end_call.")], TOOLS):
        events.append(event)
    assert [event.name for event in events if isinstance(event, ToolCall)] == ["end_call"]

    events = []
    async for event in llm.reply([system, ChatMessage(role="user", content="Say hello in three words.")], []):
        events.append(event)
    assert text_of(events).strip()
