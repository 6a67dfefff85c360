"""The phrase cache's Redis tier against a real redis-server: shared between stores (tasks), TTL, Redis
failing, and warming every agent's phrases at start (also through Polly's stub)."""

import asyncio
import socket
from collections.abc import AsyncGenerator, AsyncIterator

import pytest
import redis.asyncio as aioredis

from streaming.audio.codec import pcm16_to_ulaw
from streaming.phrases import (
    APOLOGY,
    PHRASE_TTL_S,
    PhraseCache,
    PhraseStore,
    WarmReport,
    fixed_phrases,
    phrase_key,
    redis_key,
    warm_agents,
)
from streaming.providers.base import TextToSpeech
from streaming.providers.polly import PollyTextToSpeech, polly_client
from streaming.providers.simulated import LatencyProfile, SimulatedTextToSpeech, SimulationStats, speech_audio
from switchboard.agent import AgentConfig, Voice
from tests.support.net import free_port
from tests.support.polly_stub import Fail, PollyStub, running_polly_stub

JOANNA = Voice(id="Joanna")
FAST = 10_000.0  # requests a second: no pacing in these tests


def _agent(agent_id: str, greeting: str, **conversation: object) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "id": agent_id,
            "name": agent_id,
            "directions": ["inbound"],
            "voice": {"id": "Joanna"},
            "greeting": greeting,
            "system_prompt": "Be brief.",
            "phone_numbers": ["+15550100200"],
            "conversation": conversation,
        }
    )


@pytest.fixture
def stats() -> SimulationStats:
    return SimulationStats()


@pytest.fixture
def tts(stats: SimulationStats) -> SimulatedTextToSpeech:
    return SimulatedTextToSpeech(LatencyProfile.instant(), stats)


@pytest.fixture
async def unreachable_redis() -> AsyncIterator[aioredis.Redis]:
    """A client for a port nothing listens on: every command fails to connect."""
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    yield client
    await client.aclose()


@pytest.fixture
async def silent_redis() -> AsyncIterator[aioredis.Redis]:
    """A client for a server that accepts connections and never answers: a Redis hung, not down."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
        yield client
        await client.aclose()


class _FailingTextToSpeech:
    """A TTS that cannot say one text (a provider refusing it)."""

    def __init__(self, inner: TextToSpeech, refuses: str) -> None:
        self._inner = inner
        self._refuses = refuses

    async def synthesize(self, text: str, *, voice: Voice, language: str) -> AsyncGenerator[bytes]:
        if text == self._refuses:
            raise RuntimeError("the provider refused this text")
        async for chunk in self._inner.synthesize(text, voice=voice, language=language):
            yield chunk


class _CountingTextToSpeech:
    """A TTS that records how many syntheses run at once."""

    def __init__(self, inner: TextToSpeech) -> None:
        self._inner = inner
        self.running = 0
        self.most_at_once = 0

    async def synthesize(self, text: str, *, voice: Voice, language: str) -> AsyncGenerator[bytes]:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            for _ in range(3):
                await asyncio.sleep(0)  # let every other warming task get as far as it can
            async for chunk in self._inner.synthesize(text, voice=voice, language=language):
                yield chunk
        finally:
            self.running -= 1


# -- the Redis tier --------------------------------------------------------------------------------------


async def test_a_phrase_one_task_synthesized_is_read_by_another(
    redis_client: aioredis.Redis, tts: SimulatedTextToSpeech, stats: SimulationStats
) -> None:
    first = PhraseCache(tts, voice=JOANNA, language="en-US", store=PhraseStore(redis=redis_client))
    audio = await first.get("Thank you for calling.")
    assert audio == pcm16_to_ulaw(speech_audio("Thank you for calling."))
    assert stats.tts_requests == 1

    # Another task: its own process memory, the same Redis.
    other_store = PhraseStore(redis=redis_client)
    second = PhraseCache(tts, voice=JOANNA, language="en-US", store=other_store)
    assert second.cached("Thank you for calling.") is None
    assert await second.get("Thank you for calling.") == audio
    assert stats.tts_requests == 1, "read from Redis, not synthesized again"
    assert second.cached("Thank you for calling.") == audio, "and kept in the task's memory"
    assert len(other_store) == 1


async def test_the_phrase_is_stored_under_a_hashed_key_with_a_ttl(
    redis_client: aioredis.Redis, tts: SimulatedTextToSpeech
) -> None:
    store = PhraseStore(redis=redis_client)
    audio = await PhraseCache(tts, voice=JOANNA, language="en-US", store=store).get(APOLOGY)
    key = redis_key(phrase_key(tts, JOANNA, "en-US", APOLOGY))
    assert key.startswith("phrase:{phrases}:v1:")
    assert APOLOGY not in key
    assert await redis_client.get(key) == audio
    assert 0 < await redis_client.ttl(key) <= PHRASE_TTL_S


async def test_voice_engine_and_language_each_get_their_own_entry(
    redis_client: aioredis.Redis, tts: SimulatedTextToSpeech, stats: SimulationStats
) -> None:
    store = PhraseStore(redis=redis_client)
    for voice, language in [
        (JOANNA, "en-US"),
        (Voice(id="Joanna", engine="standard"), "en-US"),
        (Voice(id="Matthew"), "en-US"),
        (JOANNA, "en-GB"),
    ]:
        await PhraseCache(tts, voice=voice, language=language, store=store).get("Hello.")
    assert stats.tts_requests == 4
    assert len(await redis_client.keys("phrase:*")) == 4


async def test_redis_down_phrases_are_still_synthesized(
    unreachable_redis: aioredis.Redis, tts: SimulatedTextToSpeech, stats: SimulationStats
) -> None:
    store = PhraseStore(redis=unreachable_redis)
    cache = PhraseCache(tts, voice=JOANNA, language="en-US", store=store)
    audio = await cache.get("One moment.")
    assert audio == pcm16_to_ulaw(speech_audio("One moment."))
    assert cache.cached("One moment.") == audio, "memory still works"
    assert await cache.warm(["Goodbye.", "Are you still there?"]) == 0
    assert stats.tts_requests == 3


async def test_redis_hung_phrases_are_synthesized_after_the_timeout(
    silent_redis: aioredis.Redis, tts: SimulatedTextToSpeech, stats: SimulationStats
) -> None:
    store = PhraseStore(redis=silent_redis, redis_timeout_s=0.05)
    cache = PhraseCache(tts, voice=JOANNA, language="en-US", store=store)
    assert await cache.get("One moment.") == pcm16_to_ulaw(speech_audio("One moment."))
    report = await warm_agents([_agent("front", "Hello.")], lambda _: tts, store, requests_per_s=FAST)
    assert report.failed == 0
    assert report.synthesized == report.phrases - 1  # "One moment." is the default filler, in memory
    assert stats.tts_requests == report.phrases


async def test_a_client_that_decodes_responses_is_refused(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            PhraseStore(redis=client)
    finally:
        await client.aclose()


# -- warming at start ------------------------------------------------------------------------------------


async def test_warming_counts_where_each_phrase_came_from(
    redis_client: aioredis.Redis, tts: SimulatedTextToSpeech, stats: SimulationStats
) -> None:
    agents = [
        _agent("front", "Hello, this is the front desk.", fillers=["One moment.", "Let me check."]),
        _agent("billing", "Hello, this is billing."),  # its filler, reprompt, goodbye and apology are front's
    ]
    distinct = {text for agent in agents for text in fixed_phrases(agent)}
    assert len(distinct) == 7

    store = PhraseStore(redis=redis_client)
    first = await warm_agents(agents, lambda _: tts, store, requests_per_s=FAST)
    assert first == WarmReport(phrases=7, in_memory=0, from_redis=0, synthesized=7, failed=0)
    assert stats.tts_requests == 7
    assert len(await redis_client.keys("phrase:*")) == 7

    again = await warm_agents(agents, lambda _: tts, store, requests_per_s=FAST)
    assert again == WarmReport(phrases=7, in_memory=7, from_redis=0, synthesized=0, failed=0)

    another_task = PhraseStore(redis=redis_client)
    shared = await warm_agents(agents, lambda _: tts, another_task, requests_per_s=FAST)
    assert shared == WarmReport(phrases=7, in_memory=0, from_redis=7, synthesized=0, failed=0)
    assert stats.tts_requests == 7, "the second task synthesized nothing"
    # What a call then asks for is there without waiting.
    cache = PhraseCache(tts, voice=JOANNA, language="en-US", store=another_task)
    assert all(cache.cached(text) is not None for text in distinct)


async def test_a_phrase_that_fails_is_counted_and_the_others_are_warmed(
    redis_client: aioredis.Redis, tts: SimulatedTextToSpeech
) -> None:
    agent = _agent("front", "Hello.")
    refusing = _FailingTextToSpeech(tts, refuses=agent.conversation.goodbye)
    store = PhraseStore(redis=redis_client)
    report = await warm_agents([agent], lambda _: refusing, store, requests_per_s=FAST)
    assert report == WarmReport(phrases=5, in_memory=0, from_redis=0, synthesized=4, failed=1)
    cache = PhraseCache(refusing, voice=JOANNA, language="en-US", store=store)
    assert cache.cached(agent.conversation.goodbye) is None
    assert cache.cached(agent.greeting) is not None


async def test_warming_keeps_to_its_concurrency(redis_client: aioredis.Redis, tts: SimulatedTextToSpeech) -> None:
    counting = _CountingTextToSpeech(tts)
    agents = [_agent(f"agent-{index}", f"Hello from agent {index}.") for index in range(6)]
    report = await warm_agents(
        agents, lambda _: counting, PhraseStore(redis=redis_client), concurrency=2, requests_per_s=FAST
    )
    assert report.synthesized == 10  # six greetings, and the four phrases they share
    assert counting.most_at_once == 2


async def test_warming_without_redis_fills_memory(tts: SimulatedTextToSpeech) -> None:
    store = PhraseStore()
    report = await warm_agents([_agent("front", "Hello.")], lambda _: tts, store, requests_per_s=FAST)
    assert report == WarmReport(phrases=5, in_memory=0, from_redis=0, synthesized=5, failed=0)
    assert len(store) == 5


async def test_warming_through_polly(redis_client: aioredis.Redis, aws_env: None) -> None:
    with running_polly_stub() as stub:
        polly = PollyTextToSpeech(polly_client("us-east-1", endpoint_url=stub.url))
        try:
            agent = _agent("front", "Hello & welcome.")
            await polly.check_voices([agent])
            stub.queue(Fail(400, "InvalidSsmlException", "Invalid SSML request"))
            store = PhraseStore(redis=redis_client)
            report = await warm_agents([agent], lambda _: polly, store, requests_per_s=FAST)
            assert report == WarmReport(phrases=5, in_memory=0, from_redis=0, synthesized=4, failed=1)
            _check_polly_audio(stub, store, polly)
        finally:
            await polly.aclose()


def _check_polly_audio(stub: PollyStub, store: PhraseStore, polly: PollyTextToSpeech) -> None:
    said = [request for request in stub.speech if request.status == 200]
    assert len(said) == 4
    for request in said:
        key = phrase_key(polly, JOANNA, "en-US", request.spoken)
        assert store.get(key) == pcm16_to_ulaw(stub.audio_for(request.spoken))
