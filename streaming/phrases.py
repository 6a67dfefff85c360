"""Fixed phrases (greeting, fillers, reprompt, goodbye, apology) synthesized once and played at once.

A greeting synthesized when the call connects would keep the caller waiting for TTS; from the cache it
starts with the first frame. `PhraseCache` is the call's view: it warms the agent's phrases while the call
is set up, and synthesizes a missing one on demand (one request per phrase however many ask). The audio
lives in a `PhraseStore` shared by every call of the process, so after the first call a phrase costs
nothing. It is kept as μ-law, the form it is sent in: half the memory of PCM and no encoding per call.

Under the process's memory, Redis is the shared tier: a phrase one task synthesized, every other task (and
the next deployment) reads instead of asking the TTS again. A lookup goes memory, then Redis, then the TTS,
and what the TTS made is written to both. Redis is only a cache here: when it fails, the phrase is
synthesized as if it had missed, and the failure is logged and counted (PhraseCacheErrors), never raised.
`warm_agents` fills both tiers for every agent at service start.
"""

import asyncio
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from streaming import counters
from streaming.audio.codec import pcm16_to_ulaw
from streaming.providers.base import TextToSpeech
from switchboard.agent import AgentConfig, Voice
from switchboard.observability import logger

# Said when a provider fails in the middle of a turn: the call goes on, the caller is asked again.
APOLOGY: Final = "Sorry, I had a problem on my side. Could you say that again?"

# A phrase's text is in its key, so an edited greeting is a new key and the old audio just expires. A week
# bounds how long a stale entry (a voice Polly has since updated) can be played, and re-synthesizing each
# phrase once a week costs nothing; it is not refreshed on reads, so the bound holds.
PHRASE_TTL_S: Final = 7 * 24 * 3600
# A Redis lookup takes about a millisecond inside the VPC (a whole warm-up's MGET of a few MB, tens). Past
# this, Redis is treated as failed and the phrase synthesized: a sick cache must not hold up a greeting.
REDIS_TIMEOUT_S: Final = 0.5
# Polly allows 8 synthesis requests a second per account and region for neural and generative voices. A
# task warming at start takes at most half, leaving the rest to the calls of the tasks already serving.
WARM_REQUESTS_PER_S: Final = 4.0
WARM_CONCURRENCY: Final = 4
# v1: the value is G.711 μ-law 8 kHz mono; another form gets another version. One hash tag for every
# phrase: ElastiCache Serverless runs in cluster mode, and warming reads them all with one MGET, which
# needs the keys in one slot (a few MB of phrases sit well on one shard).
_REDIS_PREFIX: Final = "phrase:{phrases}:v1:"

PhraseKey = tuple[str, str, str, str, str]


def phrase_key(tts: TextToSpeech, voice: Voice, language: str, text: str) -> PhraseKey:
    """(TTS implementation, voice id, engine, language, text): keyed by the TTS class rather than the
    instance, because providers may be built per call and the same engine and voice say the same text the
    same way."""
    return (f"{type(tts).__module__}.{type(tts).__qualname__}", voice.id, voice.engine, language, text)


def redis_key(key: PhraseKey) -> str:
    """The phrase's Redis key: a hash, since the text may be long and is the caller-facing script."""
    digest = hashlib.sha256(json.dumps(key, ensure_ascii=False).encode()).hexdigest()
    return _REDIS_PREFIX + digest


def fixed_phrases(agent: AgentConfig) -> list[str]:
    """What an agent says without the LLM: greeting, fillers, idle reprompt, goodbye, and the apology."""
    conversation = agent.conversation
    return [agent.greeting, *conversation.fillers, conversation.idle_reprompt, conversation.goodbye, APOLOGY]


class PhraseStore:
    """Process-wide LRU of phrase audio (μ-law) over an optional Redis tier shared by every task.

    `get`/`put` are the memory alone (no waiting: what the engine asks while a call is live); `fetch`,
    `fetch_many` and `save` go through to Redis as well.
    """

    def __init__(
        self,
        max_entries: int = 512,
        *,
        redis: aioredis.Redis | None = None,
        ttl_s: int = PHRASE_TTL_S,
        redis_timeout_s: float = REDIS_TIMEOUT_S,
    ) -> None:
        """`redis`: the service's client (`Services.redis`); it must return bytes (decode_responses off)."""
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be at least 1, got {ttl_s}")
        if redis is not None and redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("the phrase cache stores audio bytes: give it a Redis client without decode_responses")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._redis = redis
        self._redis_timeout_s = redis_timeout_s
        self._audio: OrderedDict[PhraseKey, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._audio)

    def get(self, key: PhraseKey) -> bytes | None:
        audio = self._audio.get(key)
        if audio is not None:
            self._audio.move_to_end(key)
        return audio

    def put(self, key: PhraseKey, audio: bytes) -> None:
        self._audio[key] = audio
        self._audio.move_to_end(key)
        while len(self._audio) > self.max_entries:
            self._audio.popitem(last=False)

    async def fetch(self, key: PhraseKey) -> bytes | None:
        """From memory, else from Redis (and then kept in memory); None when neither has it or Redis failed."""
        found = await self.fetch_many([key])
        return found.get(key)

    async def fetch_many(self, keys: Sequence[PhraseKey]) -> dict[PhraseKey, bytes]:
        """Those of `keys` memory or Redis has (one MGET for all that memory lacks)."""
        found: dict[PhraseKey, bytes] = {}
        missing: list[PhraseKey] = []
        for key in keys:
            audio = self.get(key)
            if audio is not None:
                found[key] = audio
            else:
                missing.append(key)
        if not missing or self._redis is None:
            return found
        try:
            async with asyncio.timeout(self._redis_timeout_s):
                stored = await self._redis.mget([redis_key(key) for key in missing])
        except (RedisError, OSError) as error:  # OSError: TimeoutError, and sockets failing under redis-py
            self._redis_failed("read", error)
            return found
        for key, value in zip(missing, stored, strict=True):
            if isinstance(value, bytes):
                self.put(key, value)
                found[key] = value
        return found

    async def save(self, key: PhraseKey, audio: bytes) -> None:
        """Into memory, and into Redis with the TTL (a Redis failure is logged and counted, not raised)."""
        self.put(key, audio)
        if self._redis is None:
            return
        try:
            async with asyncio.timeout(self._redis_timeout_s):
                await self._redis.set(redis_key(key), audio, ex=self.ttl_s)
        except (RedisError, OSError) as error:
            self._redis_failed("write", error)

    @staticmethod
    def _redis_failed(operation: str, error: BaseException) -> None:
        logger.warning(
            "the phrase cache's Redis tier failed: going on without it",
            extra={"operation": operation, "error": f"{type(error).__name__}: {error}"},
        )
        counters.count("PhraseCacheErrors", operation=operation)


async def synthesize_ulaw(tts: TextToSpeech, text: str, *, voice: Voice, language: str) -> bytes:
    """The whole of `text` from `tts`, as μ-law. Raises what the TTS raised."""
    pcm = bytearray()
    stream = tts.synthesize(text, voice=voice, language=language)
    try:
        async for piece in stream:
            pcm += piece
    finally:
        closing = getattr(stream, "aclose", None)
        if closing is not None:
            await closing()
    if len(pcm) % 2:
        del pcm[-1]
    return pcm16_to_ulaw(bytes(pcm))


class PhraseCache:
    """One call's phrases for one voice: `cached(text)` without waiting, `get(text)` synthesizing if needed."""

    def __init__(self, tts: TextToSpeech, *, voice: Voice, language: str, store: PhraseStore | None = None) -> None:
        self._tts = tts
        self._voice = voice
        self._language = language
        self._store = store if store is not None else PhraseStore()
        self._pending: dict[str, asyncio.Task[bytes]] = {}

    def _key(self, text: str) -> PhraseKey:
        return phrase_key(self._tts, self._voice, self._language, text)

    def cached(self, text: str) -> bytes | None:
        return self._store.get(self._key(text))

    async def get(self, text: str) -> bytes:
        """The phrase's μ-law audio: from memory, Redis, or the TTS. Raises what the TTS raised when it
        cannot be synthesized."""
        audio = self.cached(text)
        if audio is not None:
            return audio
        task = self._pending.get(text)
        if task is None:
            # A task of its own: a caller cancelled while waiting must not cancel it for the others.
            task = asyncio.create_task(self._synthesize(text), name=f"phrase:{text[:24]}")
            self._pending[text] = task
            task.add_done_callback(lambda _: self._pending.pop(text, None))
        return await asyncio.shield(task)

    async def warm(self, texts: Iterable[str]) -> int:
        """Every phrase not in memory yet from Redis or the TTS, concurrently; returns how many failed (logged)."""
        wanted = [text for text in dict.fromkeys(texts) if text and self.cached(text) is None]
        if not wanted:
            return 0
        results = await asyncio.gather(*(self.get(text) for text in wanted), return_exceptions=True)
        failures = 0
        for text, result in zip(wanted, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                failures += 1
                logger.warning("could not synthesize a phrase", extra={"chars": len(text)}, exc_info=result)
        return failures

    async def close(self) -> None:
        """Cancel syntheses still running (the call is over)."""
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _synthesize(self, text: str) -> bytes:
        key = self._key(text)
        audio = await self._store.fetch(key)
        if audio is None:
            audio = await synthesize_ulaw(self._tts, text, voice=self._voice, language=self._language)
            await self._store.save(key, audio)
        return audio


@dataclass(frozen=True, slots=True)
class WarmReport:
    """What warming found: distinct phrases, and where each came from (or that it failed)."""

    phrases: int
    in_memory: int
    from_redis: int
    synthesized: int
    failed: int


async def warm_agents(
    agents: Iterable[AgentConfig],
    tts_for: Callable[[AgentConfig], TextToSpeech],
    store: PhraseStore,
    *,
    requests_per_s: float = WARM_REQUESTS_PER_S,
    concurrency: int = WARM_CONCURRENCY,
) -> WarmReport:
    """At service start: every agent's fixed phrases into memory and Redis, so no call waits for one.

    Phrases already in memory or Redis are not synthesized; the rest go to each agent's TTS (`tts_for`),
    at most `concurrency` at once and at most `requests_per_s` started a second. A phrase that fails is
    logged and counted in the report; the others go on. Shared phrases (the apology) are made once per voice.
    """
    if requests_per_s <= 0 or concurrency < 1:
        raise ValueError(f"requests_per_s must be positive and concurrency at least 1: {requests_per_s}, {concurrency}")
    wanted: dict[PhraseKey, tuple[TextToSpeech, AgentConfig, str]] = {}
    for agent in agents:
        tts = tts_for(agent)
        for text in fixed_phrases(agent):
            if text:
                wanted.setdefault(phrase_key(tts, agent.voice, agent.language, text), (tts, agent, text))
    in_memory = sum(store.get(key) is not None for key in wanted)
    found = await store.fetch_many(list(wanted))
    to_make = [key for key in wanted if key not in found]
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    interval = 1.0 / requests_per_s
    next_start = loop.time()

    async def make(key: PhraseKey) -> None:
        nonlocal next_start
        tts, agent, text = wanted[key]
        async with gate:
            # Start slots `interval` apart, taken in the order requests get through the gate.
            now = loop.time()
            start = max(now, next_start)
            next_start = start + interval
            await asyncio.sleep(start - now)
            audio = await synthesize_ulaw(tts, text, voice=agent.voice, language=agent.language)
        await store.save(key, audio)

    results = await asyncio.gather(*(make(key) for key in to_make), return_exceptions=True)
    failed = 0
    for key, result in zip(to_make, results, strict=True):
        if isinstance(result, asyncio.CancelledError):
            raise result
        if isinstance(result, BaseException):
            failed += 1
            _, agent, text = wanted[key]
            logger.warning(
                "could not synthesize a phrase", extra={"agent_id": agent.id, "chars": len(text)}, exc_info=result
            )
    return WarmReport(
        phrases=len(wanted),
        in_memory=in_memory,
        from_redis=len(found) - in_memory,
        synthesized=len(to_make) - failed,
        failed=failed,
    )
