"""OpenAILanguageModel through the real openai client against a local OpenAI-compatible server on uvicorn.

The server (tests/support/openai_server.py) streams chunks as api.openai.com does and misbehaves on
request: HTTP errors, a slow first token, a connection cut mid-stream, an error event. Deadlines are set
small here so that a "slow" token is slow without making the suite slow; nothing here measures time.
The last test runs a whole call through the engine with the model failing, to hear the apology.
"""

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import openai
import pytest
import redis.asyncio as aioredis
from moto import mock_aws

from streaming.phrases import APOLOGY
from streaming.providers.base import (
    CallProviders,
    LanguageModelError,
    LlmEvent,
    Providers,
    ReplyDeadlines,
    TextDelta,
    ToolCall,
)
from streaming.providers.openai_llm import OpenAILanguageModel, openai_client
from streaming.providers.simulated import LatencyProfile, SimulatedProviders, tokens
from switchboard.agent import AgentConfig, load_agent
from switchboard.agent import LanguageModel as LanguageModelSettings
from switchboard.records import CallRecords, table_definition
from switchboard.state import CallStateStore, ChatMessage
from switchboard.tool_actions import tool_schemas
from switchboard.turn import Role
from tests.integration.test_engine import TABLE, Harness, scenario, texts
from tests.support.openai_server import (
    Completion,
    Failure,
    OpenAIServer,
    ScriptedToolCall,
    running_openai_server,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

REPO = Path(__file__).resolve().parents[2]
SETTINGS = LanguageModelSettings(provider="openai", model="gpt-4o-mini", temperature=0.3, max_tokens=120)
# Small, so that the "slow" answers below are slow without the tests being so.
DEADLINES = ReplyDeadlines(first_token_s=0.5, first_token_budget_s=1.5, total_s=5.0)
HISTORY = [
    ChatMessage(role="system", content="You are the receptionist of a clinic."),
    ChatMessage(role="assistant", content="Hello, how can I help?"),
    ChatMessage(role="user", content="What time do you open?"),
]
SLOW_S = 60.0  # longer than any deadline here: such an answer never comes in time


@pytest.fixture
async def server() -> AsyncIterator[OpenAIServer]:
    async with running_openai_server() as running:
        yield running


@pytest.fixture
async def client(server: OpenAIServer) -> AsyncIterator[openai.AsyncOpenAI]:
    built = openai_client("sk-test", base_url=server.url)
    yield built
    await built.close()


def model(client: openai.AsyncOpenAI, deadlines: ReplyDeadlines = DEADLINES) -> OpenAILanguageModel:
    return OpenAILanguageModel(client, SETTINGS, deadlines=deadlines)


async def collect(
    llm: OpenAILanguageModel,
    messages: Sequence[ChatMessage] = HISTORY,
    tools: Sequence[Mapping[str, Any]] = (),
    into: list[LlmEvent] | None = None,
) -> list[LlmEvent]:
    events = [] if into is None else into
    async for event in llm.reply(messages, tools):
        events.append(event)
    return events


def text_of(events: Sequence[LlmEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def receptionist() -> AgentConfig:
    return load_agent(REPO / "agents" / "clinic-receptionist.yaml")


# -- streaming ---------------------------------------------------------------------------------------------


async def test_text_streams_as_deltas_with_the_agents_settings(
    server: OpenAIServer, client: openai.AsyncOpenAI
) -> None:
    text = "We open at half past eight, Monday to Friday."
    server.enqueue(Completion(text))

    events = await collect(model(client))

    assert [event.text for event in events if isinstance(event, TextDelta)] == tokens(text)
    assert all(isinstance(event, TextDelta) for event in events)
    (body,) = server.bodies
    assert body["model"] == "gpt-4o-mini"
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 120
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert "tools" not in body  # OpenAI rejects an empty list
    assert server.exchanges[0].completed


async def test_history_and_tools_are_sent_in_chat_completion_form(
    server: OpenAIServer, client: openai.AsyncOpenAI
) -> None:
    schemas = tool_schemas(receptionist())
    arguments = json.dumps({"start": "2026-11-24T10:30", "name": "Ada"})
    history = [
        *HISTORY,
        ChatMessage(
            role="assistant",
            content="Let me book that.",
            tool_calls=[
                {"id": "call_1", "type": "function", "function": {"name": "book_appointment", "arguments": arguments}},
                {"id": "call_2", "type": "function", "function": {"name": "send_sms", "arguments": '{"text": "Hi"}'}},
            ],
        ),
        ChatMessage(role="tool", tool_call_id="call_1", name="book_appointment", content='{"outcome": "succeeded"}'),
        ChatMessage(role="tool", tool_call_id="call_2", name="send_sms", content='{"outcome": "refused"}'),
        ChatMessage(
            role="assistant",
            tool_calls=[{"id": "call_3", "type": "function", "function": {"name": "end_call", "arguments": "{}"}}],
        ),
        ChatMessage(role="tool", tool_call_id="call_3", name="end_call", content='{"outcome": "failed"}'),
        ChatMessage(role="assistant", content=None),  # cut before a word was heard: not sent
        ChatMessage(role="user", content="Thanks."),
    ]
    server.enqueue(Completion("You're welcome."))

    await collect(model(client), history, schemas)

    (body,) = server.bodies
    assert body["tools"] == schemas
    assert body["messages"] == [
        {"role": "system", "content": "You are the receptionist of a clinic."},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "What time do you open?"},
        {
            "role": "assistant",
            "content": "Let me book that.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "book_appointment", "arguments": arguments}},
                {"id": "call_2", "type": "function", "function": {"name": "send_sms", "arguments": '{"text": "Hi"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"outcome": "succeeded"}'},
        {"role": "tool", "tool_call_id": "call_2", "content": '{"outcome": "refused"}'},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_3", "type": "function", "function": {"name": "end_call", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call_3", "content": '{"outcome": "failed"}'},
        {"role": "user", "content": "Thanks."},
    ]


async def test_a_tool_call_split_over_chunks_comes_whole_after_the_text(
    server: OpenAIServer, client: openai.AsyncOpenAI
) -> None:
    arguments = json.dumps({"start": "2026-11-24T10:30", "name": "Ada Lovelace"})
    server.enqueue(Completion("Booking that now.", [ScriptedToolCall("call_abc", "book_appointment", arguments)]))

    events = await collect(model(client))

    assert text_of(events) == "Booking that now."
    assert events[-1] == ToolCall("call_abc", "book_appointment", arguments)
    assert sum(isinstance(event, ToolCall) for event in events) == 1


async def test_parallel_tool_calls_each_come_whole_in_order(server: OpenAIServer, client: openai.AsyncOpenAI) -> None:
    booking = json.dumps({"start": "2026-11-24T10:30", "name": "Ada"})
    sms = json.dumps({"text": "Your appointment is on Tuesday at 10:30."})
    server.enqueue(
        Completion(
            "",
            [ScriptedToolCall("call_1", "book_appointment", booking), ScriptedToolCall("call_2", "send_sms", sms)],
        )
    )

    events = await collect(model(client))

    assert events == [ToolCall("call_1", "book_appointment", booking), ToolCall("call_2", "send_sms", sms)]


# -- failures and the one retry ------------------------------------------------------------------------


async def test_a_server_error_is_retried_once(server: OpenAIServer, client: openai.AsyncOpenAI) -> None:
    server.enqueue(Failure(500), Completion("We open at nine."))

    events = await collect(model(client))

    assert text_of(events) == "We open at nine."
    assert len(server.exchanges) == 2
    assert server.bodies[0] == server.bodies[1]


async def test_rate_limiting_is_retried_once(server: OpenAIServer, client: openai.AsyncOpenAI) -> None:
    server.enqueue(Failure(429, "Rate limit reached", "requests"), Completion("We open at nine."))

    assert text_of(await collect(model(client))) == "We open at nine."
    assert len(server.exchanges) == 2


async def test_two_server_errors_are_a_language_model_error(server: OpenAIServer, client: openai.AsyncOpenAI) -> None:
    server.enqueue(Failure(500), Failure(503, "Service unavailable"), Completion("Never asked for."))

    with pytest.raises(
        LanguageModelError,
        match=r"openai model 'gpt-4o-mini' failed after a retry: Error code: 503 - Service unavailable",
    ):
        await collect(model(client))
    assert len(server.exchanges) == 2


async def test_a_rejected_request_is_not_retried(server: OpenAIServer, client: openai.AsyncOpenAI) -> None:
    server.enqueue(Failure(401, "Incorrect API key provided.", "invalid_request_error"), Completion("Never asked for."))

    with pytest.raises(
        LanguageModelError, match=r"rejected the request \(Error code: 401 - Incorrect API key provided.\)"
    ):
        await collect(model(client))
    assert len(server.exchanges) == 1


async def test_a_slow_first_token_is_abandoned_and_retried(server: OpenAIServer, client: openai.AsyncOpenAI) -> None:
    server.enqueue(Completion("Too late.", first_token_s=SLOW_S), Completion("We open at nine."))

    events = await collect(model(client))

    assert text_of(events) == "We open at nine."
    assert len(server.exchanges) == 2
    # The abandoned attempt's connection was closed, not left streaming.
    await server.exchanges[0].disconnected.wait()


async def test_no_retry_when_it_could_not_answer_within_the_budget(
    server: OpenAIServer, client: openai.AsyncOpenAI
) -> None:
    # After a first-token timeout of 0.5 s, another attempt of 0.5 s would end past the 0.8 s budget.
    deadlines = ReplyDeadlines(first_token_s=0.5, first_token_budget_s=0.8, total_s=5.0)
    server.enqueue(Completion("Too late.", first_token_s=SLOW_S), Completion("Never asked for."))

    with pytest.raises(LanguageModelError, match=r"no first token within 0\.5 s"):
        await collect(model(client, deadlines))
    assert len(server.exchanges) == 1


async def test_a_stream_cut_after_text_is_an_error_without_retry(
    server: OpenAIServer, client: openai.AsyncOpenAI
) -> None:
    text = "We open at half past eight, Monday to Friday."
    server.enqueue(Completion(text, drop_after=3), Completion("Never asked for."))
    events: list[LlmEvent] = []

    with pytest.raises(LanguageModelError, match="connection failed"):
        await collect(model(client), into=events)
    # What was said stays said; a retry would say it twice.
    assert text_of(events) == "".join(tokens(text)[:3])
    assert len(server.exchanges) == 1


async def test_a_stream_cut_before_any_text_is_retried(server: OpenAIServer, client: openai.AsyncOpenAI) -> None:
    server.enqueue(Completion("Lost.", drop_after=0), Completion("We open at nine."))

    assert text_of(await collect(model(client))) == "We open at nine."
    assert len(server.exchanges) == 2


async def test_an_error_event_mid_stream_is_an_error(server: OpenAIServer, client: openai.AsyncOpenAI) -> None:
    server.enqueue(Completion("We open at half past eight.", error_after=2), Completion("Never asked for."))
    events: list[LlmEvent] = []

    with pytest.raises(LanguageModelError, match="The model stopped unexpectedly"):
        await collect(model(client), into=events)
    assert len(events) == 2
    assert len(server.exchanges) == 1


async def test_a_stream_that_stalls_mid_way_ends_at_the_total_deadline(
    server: OpenAIServer, client: openai.AsyncOpenAI
) -> None:
    deadlines = ReplyDeadlines(first_token_s=0.5, first_token_budget_s=0.5, total_s=0.8)
    server.enqueue(Completion("We open at half past eight.", token_interval_s=SLOW_S))
    events: list[LlmEvent] = []

    with pytest.raises(LanguageModelError, match=r"took longer than 0\.8 s"):
        await collect(model(client, deadlines), into=events)
    assert text_of(events) == tokens("We open at half past eight.")[0]
    await server.exchanges[0].disconnected.wait()


async def test_closing_the_reply_mid_stream_closes_the_request(
    server: OpenAIServer, client: openai.AsyncOpenAI
) -> None:
    """Barge-in: the engine stops iterating and closes the generator; the server sees the client go."""
    server.enqueue(Completion("We open at half past eight, Monday to Friday.", token_interval_s=SLOW_S))
    replies = model(client).reply(HISTORY, [])

    first = await anext(replies)
    await replies.aclose()

    assert first == TextDelta(tokens("We open at half past eight, Monday to Friday.")[0])
    await server.exchanges[0].disconnected.wait()
    assert not server.exchanges[0].completed


# -- through the engine ------------------------------------------------------------------------------------


@pytest.fixture
def harness(aws_env: None, redis_client: aioredis.Redis) -> Iterator[Harness]:
    with mock_aws():
        dynamodb: DynamoDBClient = boto3.client("dynamodb")
        dynamodb.create_table(**table_definition(TABLE))
        yield Harness(records=CallRecords(TABLE, dynamodb), store=CallStateStore(redis_client), redis=redis_client)


class OpenAIProviders:
    """Simulated speech in and out, and the OpenAI adapter thinking, built per call as the service does."""

    def __init__(self, inner: Providers, client: openai.AsyncOpenAI) -> None:
        self.inner = inner
        self.client = client

    def for_call(self, agent: AgentConfig, parameters: Mapping[str, str]) -> CallProviders:
        simulated = self.inner.for_call(agent, parameters)
        llm = OpenAILanguageModel(self.client, agent.llm, deadlines=DEADLINES)
        return CallProviders(stt=simulated.stt, llm=llm, tts=simulated.tts)


async def test_a_failing_model_is_apologized_for_and_the_call_goes_on(
    harness: Harness, server: OpenAIServer, client: openai.AsyncOpenAI
) -> None:
    script = scenario(
        """
name: openai-failing
steps:
  - say: "What time do you open?"
  - say: "What time do you open?"
"""
    )

    def answer(body: dict[str, Any]) -> Completion | Failure:
        # By the caller's turn, not by order: the engine may start (and drop) a reply speculatively.
        turn = sum(message["role"] == "user" for message in body["messages"])
        return Failure(500) if turn == 1 else Completion("We open at half past eight.")

    server.answer_with(answer)
    providers = OpenAIProviders(SimulatedProviders({script.name: script}, LatencyProfile.instant()), client)
    sid = "CA" + uuid.uuid4().hex
    harness.record_call(sid)

    await harness.call(sid, script, providers=providers)

    assistant = texts(harness.turns(sid), Role.ASSISTANT)
    assert assistant[1] == APOLOGY
    assert assistant[2] == "We open at half past eight."
    first_turn = [body for body in server.bodies if answer(body) == Failure(500)]
    assert len(first_turn) >= 2  # the request and its one retry
    # The agent's own settings went to the API.
    agent = harness.agent
    assert {(body["model"], body["temperature"], body["max_tokens"]) for body in server.bodies} == {
        (agent.llm.model, agent.llm.temperature, agent.llm.max_tokens)
    }


# -- the real API --------------------------------------------------------------------------------------------


@pytest.mark.openai
@pytest.mark.skipif(not os.environ.get("OPENAI_API_KEY"), reason="needs OPENAI_API_KEY")
async def test_the_real_api_streams_text_and_calls_a_tool() -> None:
    client = openai_client(os.environ["OPENAI_API_KEY"], base_url=os.environ.get("OPENAI_BASE_URL"))
    try:
        llm = OpenAILanguageModel(client, LanguageModelSettings(model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini")))
        schemas = tool_schemas(receptionist())
        messages = [
            ChatMessage(role="system", content="You are a clinic receptionist on the phone. Use tools when asked."),
            ChatMessage(role="user", content="Please hang up the call now, using the end_call tool."),
        ]
        events = await collect(llm, messages, schemas)
        calls = [event for event in events if isinstance(event, ToolCall)]
        assert [call.name for call in calls] == ["end_call"]
        assert isinstance(json.loads(calls[0].arguments or "{}"), dict)

        events = await collect(llm, [messages[0], ChatMessage(role="user", content="Say hello in three words.")])
        assert text_of(events).strip()
    finally:
        await client.close()
