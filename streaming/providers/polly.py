"""Amazon Polly text-to-speech: one SynthesizeSpeech request per sentence, its audio forwarded as it arrives.

Polly gives PCM16 at 8 kHz (OutputFormat "pcm", SampleRate "8000"): the form the engine takes, so nothing
is resampled. The request is SSML: the LLM's text is XML-escaped and wrapped in <speak>, so a "<" or an
"&" in a reply is said, not parsed, and no reply can smuggle SSML tags (a 10-second <break>) into the call.

boto3 is synchronous. The request and every read of the AudioStream run on this adapter's own threads and
each chunk reaches the event loop as soon as the socket has it: `read1` returns what has arrived, where
StreamingBody.read(n) and iter_chunks wait until n bytes have (256 ms of audio for n = 4096). A thread is
held only while a call blocks (until Polly's headers, then until the next bytes), never while the engine
is busy with a chunk. Closing the generator (barge-in) closes the HTTP response at once; a read still
blocked in the socket is woken by urllib3's `shutdown()` and the response closed when it returns.

Throttling (Polly answers HTTP 400 ThrottlingException, see RetryPolicy) and transient failures (5xx,
connection errors before any audio) are retried with jittered exponential backoff inside a time budget;
botocore's own retries are off, because its standard mode sleeps up to 1 s, then 2 s: too slow for a live
call and not bounded by our budget. Any other error raises PollyError and the engine plays its apology.
"""

import asyncio
import contextlib
import random
import re
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, cast
from xml.sax.saxutils import escape

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import BaseModel, ConfigDict, Field

from streaming import counters
from switchboard.agent import AgentConfig, Voice
from switchboard.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_polly.client import PollyClient
    from mypy_boto3_polly.type_defs import SynthesizeSpeechInputTypeDef, SynthesizeSpeechOutputTypeDef

# Each in-flight synthesis holds a thread only while it blocks on the network. A call has at most two
# (the sentence playing and the next one, reply.py prefetches one ahead), and Polly's account quota (neural
# and generative 8 requests/s, standard 80) caps how many a deployment starts. 64 covers two each for a
# task's calls (the stack scales out at 20 calls a task, and a task may hold more before it does) plus
# the start's warming, so no sentence waits for a thread; threads blocked in recv cost no CPU and hold no
# GIL. The connection pool has one connection per thread, so no request waits for a connection or
# reconnects (TLS) because the pool was smaller.
MAX_CONCURRENT_REQUESTS: Final = 64
# Polly's first byte takes 100-300 ms (neural), up to ~1 s (generative); connecting inside the region, ms.
# A live call would rather hear the apology than wait longer than these for either.
CONNECT_TIMEOUT_S: Final = 1.0
READ_TIMEOUT_S: Final = 2.0
# At most this much per read; a read returns whatever has arrived, so this bounds only a backlog.
READ_BYTES: Final = 8192
# Polly takes at most 3000 billed and 6000 total characters. Keeping the whole SSML document, tags and
# entities included, within 3000 keeps both without knowing how Polly bills an entity.
MAX_SSML_CHARS: Final = 3000
SAMPLE_RATE: Final = "8000"

# Polly's throttling answer is HTTP 400 ThrottlingException (its quotas page); the rest are the codes
# AWS services use for the same thing, kept in case Polly's front end says it another way.
THROTTLING_CODES: Final = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded", "SlowDown"}
)
# ServiceFailureException is Polly's HTTP 500: worth one more try, as is any 5xx.
TRANSIENT_CODES: Final = frozenset({"ServiceFailureException", "ServiceUnavailable", "InternalFailure"})

_SPEAK_OPEN: Final = "<speak>"
_SPEAK_CLOSE: Final = "</speak>"
# Inside an element only < and & must be escaped; quotes too, so that nothing the LLM writes can close an
# attribute if the document ever grows one around the text.
_ENTITIES: Final = {'"': "&quot;", "'": "&apos;"}
# Characters XML 1.0 does not allow at all (control characters): Polly would reject the whole document.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


class PollyError(RuntimeError):
    """Polly could not say a text. The message says why; it never carries the text (it is the caller's
    conversation, and this message is logged above DEBUG)."""


class PollyThrottled(PollyError):
    """Polly kept throttling beyond the retry budget."""


class VoiceCheckError(ValueError):
    """An agent's voice cannot be used with Polly as configured; one line per agent, naming what to fix."""


class RetryPolicy(BaseModel):
    """Retries of throttled and transient failures: full-jitter exponential backoff (a random delay between
    0 and min(max_delay_s, base_delay_s * 2**retry)), until `max_attempts` requests or until the next wait
    would end later than `budget_s` after the first request.

    1.5 s: past that, silence on the line is worse than the engine's apology, and Polly's quotas are per
    second, so a throttled request usually gets through within one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=6, ge=1, le=20)
    base_delay_s: float = Field(default=0.1, ge=0.0, le=10.0)
    max_delay_s: float = Field(default=0.8, ge=0.0, le=30.0)
    budget_s: float = Field(default=1.5, ge=0.0, le=60.0)

    def delay_s(self, retry: int) -> float:
        """The wait before retry number `retry` (from 0)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2**retry)
        return random.uniform(0.0, ceiling)  # noqa: S311 - jitter, not a secret


def polly_client(
    region: str | None = None, *, endpoint_url: str | None = None, max_connections: int = MAX_CONCURRENT_REQUESTS
) -> "PollyClient":
    """A Polly client configured for live calls: short timeouts, no botocore retries (PollyTextToSpeech
    retries itself), one pooled connection per synthesis thread, TCP keepalive on idle pooled connections."""
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"mode": "standard", "total_max_attempts": 1},
        max_pool_connections=max_connections,
        tcp_keepalive=True,
    )
    return boto3.client("polly", region_name=region, endpoint_url=endpoint_url, config=config)


# -- SSML ------------------------------------------------------------------------------------------------


def escape_ssml(text: str) -> str:
    """`text` as SSML character data: XML-escaped, characters XML cannot carry dropped."""
    return escape(_NOT_XML.sub("", text), _ENTITIES)


def ssml_documents(text: str, limit: int = MAX_SSML_CHARS) -> list[str]:
    """`text` as <speak> documents of at most `limit` characters each, in order: split between sentences
    where it can, else between words, else (a "word" longer than a document) inside it. Empty for blank
    text. Whitespace between the pieces becomes one space."""
    budget = limit - len(_SPEAK_OPEN) - len(_SPEAK_CLOSE)
    if budget < len(escape_ssml("'")):
        raise ValueError(f"limit {limit} leaves no room for text")
    clean = _NOT_XML.sub("", text).strip()
    if not clean:
        return []
    whole = escape_ssml(clean)
    if len(whole) <= budget:
        return [_SPEAK_OPEN + whole + _SPEAK_CLOSE]
    documents: list[str] = []
    current: list[str] = []
    size = 0
    for unit in _units(clean, budget):
        if current and size + 1 + len(unit) > budget:
            documents.append(_SPEAK_OPEN + " ".join(current) + _SPEAK_CLOSE)
            current, size = [], 0
        size += len(unit) + (1 if current else 0)
        current.append(unit)
    if current:
        documents.append(_SPEAK_OPEN + " ".join(current) + _SPEAK_CLOSE)
    return documents


def _units(text: str, budget: int) -> Iterator[str]:
    """Escaped pieces of `text`, each at most `budget` long: sentences, or the words of a longer one."""
    for sentence in _SENTENCE_END.split(text):
        escaped = escape_ssml(sentence)
        if len(escaped) <= budget:
            yield escaped
            continue
        for word in sentence.split():
            escaped = escape_ssml(word)
            if len(escaped) <= budget:
                yield escaped
                continue
            piece = ""
            for character in word:
                entity = escape_ssml(character)
                if len(piece) + len(entity) > budget:
                    yield piece
                    piece = ""
                piece += entity
            if piece:
                yield piece


# -- the adapter -----------------------------------------------------------------------------------------


class _RawAudio(Protocol):
    """What this adapter uses of the HTTP response under boto3's StreamingBody (urllib3's HTTPResponse,
    or moto's in-process stand-in)."""

    def read1(self, amt: int) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PollyVoice:
    """What DescribeVoices says of a voice."""

    id: str
    language: str
    additional_languages: frozenset[str]
    engines: frozenset[str]


class PollyTextToSpeech:
    """TextToSpeech on Amazon Polly. One instance serves every call of the process (boto3 clients are
    thread-safe); `aclose()` it when the service stops."""

    def __init__(
        self,
        client: "PollyClient",
        *,
        max_concurrent_requests: int = MAX_CONCURRENT_REQUESTS,
        retry: RetryPolicy | None = None,
    ) -> None:
        """`client`: from `polly_client()`. Another client needs `max_pool_connections` of at least
        `max_concurrent_requests`: urllib3 opens a connection past its pool for one request and then drops
        it, a TLS handshake on a sentence's critical path."""
        if max_concurrent_requests < 1:
            raise ValueError(f"max_concurrent_requests must be at least 1, got {max_concurrent_requests}")
        self._client = client
        self._retry = retry if retry is not None else RetryPolicy()
        self._executor = ThreadPoolExecutor(max_workers=max_concurrent_requests, thread_name_prefix="polly")
        # Voices described by check_voices: whether to send LanguageCode (only a bilingual voice needs it).
        self._voices: dict[str, PollyVoice] = {}

    async def aclose(self) -> None:
        """Stop the threads (a read still blocked ends at its timeout) and close the client's connections."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    async def synthesize(self, text: str, *, voice: Voice, language: str) -> AsyncGenerator[bytes]:
        """PCM16 8 kHz for `text`, chunk by chunk as Polly sends it; whole samples in every chunk."""
        carry = b""
        for document in ssml_documents(text):
            stream = self._stream(document, voice, language)
            try:
                async for data in stream:
                    # A read may end in the middle of a sample: its odd byte waits for the next read.
                    if carry:
                        data = carry + data
                    even = len(data) & ~1
                    carry = data[even:]
                    if even:
                        yield data[:even]
            finally:
                await stream.aclose()
        # Each response is whole samples, so an odd byte left over means a malformed one: half a sample is
        # not audio, and it is dropped.

    async def check_voices(self, agents: Iterable[AgentConfig]) -> None:
        """At start: every Polly agent's voice exists, supports the agent's engine and speaks its language.

        Raises VoiceCheckError naming each agent, voice and engine at fault, e.g. "Joanna does not support
        the generative engine; it supports: neural, standard". Needs polly:DescribeVoices.
        """
        agents = [agent for agent in agents if agent.voice.provider == "polly"]
        if not agents:
            return
        engines = sorted({agent.voice.engine for agent in agents})
        catalogue = {engine: await self._describe_voices(engine) for engine in engines}
        every_voice: dict[str, PollyVoice] | None = None
        problems: list[str] = []
        usable: dict[str, PollyVoice] = {}
        for agent in agents:
            wanted = agent.voice
            found = catalogue[wanted.engine].get(wanted.id)
            if found is None:
                if every_voice is None:
                    every_voice = await self._describe_voices(None)
                known = every_voice.get(wanted.id)
                if known is None:
                    problems.append(f"agent {agent.id!r}: Polly has no voice {wanted.id!r}")
                else:
                    supported = ", ".join(sorted(known.engines)) or "none"
                    problems.append(
                        f"agent {agent.id!r}: {wanted.id} does not support the {wanted.engine} engine; "
                        f"it supports: {supported}"
                    )
                continue
            spoken = {found.language, *found.additional_languages}
            if agent.language not in spoken:
                if agent.language.split("-")[0] not in {code.split("-")[0] for code in spoken}:
                    problems.append(
                        f"agent {agent.id!r}: {wanted.id} speaks {', '.join(sorted(spoken))}, "
                        f"not the agent's language {agent.language}"
                    )
                    continue
                # Same language, another accent (an en-GB voice for an en-US agent): allowed, said once.
                logger.warning(
                    "the agent's Polly voice speaks its language with another accent",
                    extra={"agent_id": agent.id, "voice": wanted.id, "voice_language": found.language},
                )
            usable[found.id] = found
        if problems:
            raise VoiceCheckError("\n".join(problems))
        self._voices.update(usable)

    async def _describe_voices(self, engine: str | None) -> dict[str, PollyVoice]:
        def describe() -> dict[str, PollyVoice]:
            voices: dict[str, PollyVoice] = {}
            query: dict[str, Any] = {} if engine is None else {"Engine": engine}
            for page in self._client.get_paginator("describe_voices").paginate(**query):
                for described in page.get("Voices", []):
                    engines = frozenset(described.get("SupportedEngines", []))
                    # Polly filters by Engine already; checking again keeps the answer right where the
                    # filter is not applied (moto ignores it).
                    if engine is not None and engine not in engines:
                        continue
                    voices[described.get("Id", "")] = PollyVoice(
                        id=described.get("Id", ""),
                        language=described.get("LanguageCode", ""),
                        additional_languages=frozenset(described.get("AdditionalLanguageCodes", [])),
                        engines=engines,
                    )
            return voices

        try:
            return await self._in_thread(describe)
        except (ClientError, BotoCoreError) as error:
            scope = "every engine" if engine is None else f"the {engine} engine"
            raise VoiceCheckError(f"cannot list Polly's voices for {scope} (DescribeVoices): {error}") from error

    async def _stream(self, ssml: str, voice: Voice, language: str) -> AsyncGenerator[bytes]:
        response = await self._request(ssml, voice, language)
        # StreamingBody has no read1, and its read(n) waits for n bytes: read the response under it.
        raw = cast(_RawAudio, response["AudioStream"]._raw_stream)  # type: ignore[attr-defined]
        reading: Future[bytes] | None = None
        received = 0
        try:
            while True:
                reading = self._executor.submit(raw.read1, READ_BYTES)
                try:
                    data = await asyncio.wrap_future(reading)
                except Exception as error:
                    counters.count("TtsErrors", provider="polly", reason="stream")
                    raise PollyError(
                        f"Polly's audio stream broke off after {received} bytes: {type(error).__name__}: {error}"
                    ) from error
                if not data:
                    return
                received += len(data)
                yield data
        finally:
            _release(raw, reading)

    async def _request(self, ssml: str, voice: Voice, language: str) -> "SynthesizeSpeechOutputTypeDef":
        request: dict[str, Any] = {
            "Engine": voice.engine,
            "OutputFormat": "pcm",
            "SampleRate": SAMPLE_RATE,
            "Text": ssml,
            "TextType": "ssml",
            "VoiceId": voice.id,
        }
        described = self._voices.get(voice.id)
        if described is not None and language in described.additional_languages:
            # A bilingual voice (Aditi: en-IN, and hi-IN) speaks its default language unless told.
            request["LanguageCode"] = language
        arguments = cast("SynthesizeSpeechInputTypeDef", request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry.budget_s
        attempt = 0
        while True:
            attempt += 1
            pending = self._executor.submit(self._client.synthesize_speech, **arguments)
            try:
                return await asyncio.wrap_future(pending)
            except asyncio.CancelledError:
                # The request goes on in its thread: close its response when it comes, or the connection
                # would stay busy with audio nobody reads.
                pending.add_done_callback(_close_response)
                raise
            except (ClientError, BotoCoreError) as error:
                reason = _retry_reason(error)
                if reason is None:
                    counters.count("TtsErrors", provider="polly", reason="refused")
                    raise PollyError(f"Polly refused to synthesize ({voice.id}, {voice.engine}): {error}") from error
                delay = self._retry.delay_s(attempt - 1)
                if attempt >= self._retry.max_attempts or loop.time() + delay > deadline:
                    counters.count("TtsErrors", provider="polly", reason=reason)
                    failure = PollyThrottled if reason == "throttled" else PollyError
                    raise failure(
                        f"Polly failed {attempt} time(s) within the retry budget "
                        f"({self._retry.budget_s} s, {self._retry.max_attempts} attempts), last: {error}"
                    ) from error
                logger.debug("retrying Polly", extra={"reason": reason, "attempt": attempt, "delay_s": delay})
                counters.count("TtsRetries", provider="polly", reason=reason)
                await asyncio.sleep(delay)

    async def _in_thread[T](self, function: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self._executor.submit(function))


def _retry_reason(error: ClientError | BotoCoreError) -> str | None:
    """Why another attempt may succeed ("throttled", "transient"), or None when it would fail the same way."""
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code in THROTTLING_CODES or status == 429:
            return "throttled"
        if code in TRANSIENT_CODES or status >= 500:
            return "transient"
        return None
    # Connection refused or reset, a connect or read timeout before Polly's headers: nothing was said yet.
    if isinstance(error, BotoConnectionError | HTTPClientError):
        return "transient"
    return None


def _release(raw: _RawAudio, reading: "Future[bytes] | None") -> None:
    """Close the response now, or, with a read blocked in its thread, wake the read and close after it."""
    if reading is None or reading.done():
        raw.close()
        return
    # urllib3's HTTPResponse.shutdown (2.3+) shuts the socket for reading, which ends a blocked recv at
    # once; moto's in-process responses have none and never block.
    shutdown: Callable[[], None] | None = getattr(raw, "shutdown", None)
    if shutdown is not None:
        with contextlib.suppress(Exception):  # already released or closed: nothing left to wake
            shutdown()
    reading.add_done_callback(lambda _: raw.close())


def _close_response(pending: "Future[SynthesizeSpeechOutputTypeDef]") -> None:
    if not pending.cancelled() and pending.exception() is None:
        pending.result()["AudioStream"].close()
