"""Speech-to-text with Amazon Transcribe streaming, through the official aws-sdk-transcribe-streaming.

One TranscribeSpeechSession per call. The caller's audio (PCM16 8 kHz, decoded from μ-law, never resampled)
goes to Transcribe as 60 ms AudioEvents; its results come back as Transcripts with partial-result
stabilization. What the session does so that a call survives Transcribe:

- `send_audio` never waits for the network: frames go into one buffer that a writer task drains into the
  HTTP/2 request stream. That buffer also keeps every frame since the end of the last final result, so
  when a stream has to be replaced the new one is fed the audio that was not transcribed for good yet.
- Transcribe ends a stream that gets no audio for ~15 s. The engine sends every inbound frame, but a media
  gap (Twilio hiccup, a resumed stream) can leave it without: after `keepalive_after_ms` without caller
  audio the writer sends silence in real time. That silence is not the caller's audio, so results are
  mapped back onto the caller's audio time around it.
- A stream that fails for a reason that may pass (Transcribe's InternalFailure, ServiceUnavailable,
  LimitExceeded, a dead HTTP/2 connection, a stream that just ends) is replaced with backoff, and the
  audio since the last final is replayed into the new one, with its time offset, so nothing is lost,
  duplicated or shifted. A stream nears Transcribe's 4-hour limit: it is replaced at the next pause.
  A partial that was in flight is superseded by the new stream's results (a new segment id).
- Errors that will not pass (a bad language or vocabulary, access denied, no credentials) end
  `transcripts()` with TranscribeError and Transcribe's own message.

Times on Transcripts are milliseconds of the caller's audio since the start of this session, continuous
across internal reopens: what base.Transcript promises and what the simulated STT gives.

Credentials: the SDK's own credential chain (0.12) covers environment variables, shared config files and
credential processes; the ECS container endpoint (Fargate task role), instance metadata and SSO need extra
`aws-credentials-*` packages. BotocoreCredentials bridges botocore's chain instead, which covers all of
them and refreshes temporary credentials, so the media service resolves credentials the same way as the
boto3 clients next to it.
"""

import asyncio
import time
from bisect import bisect_right
from collections.abc import AsyncGenerator, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, Self

import boto3
from aws_sdk_transcribe_streaming.client import AsyncTranscribeStreamingClient
from aws_sdk_transcribe_streaming.config import AsyncTranscribeStreamingConfig
from aws_sdk_transcribe_streaming.models import (
    AudioEvent,
    AudioStream,
    AudioStreamAudioEvent,
    BadRequestException,
    ConflictException,
    InternalFailureException,
    Item,
    LimitExceededException,
    MediaEncoding,
    Result,
    ServiceUnavailableException,
    StartStreamTranscriptionInput,
    StartStreamTranscriptionOutput,
    TranscriptEvent,
    TranscriptResultStream,
    TranscriptResultStreamTranscriptEvent,
)
from pydantic import BaseModel, ConfigDict, Field
from smithy_aws_core.identity import AWSCredentialsIdentity, AWSIdentityProperties
from smithy_core.aio.eventstream import DuplexEventStream
from smithy_core.aio.interfaces.eventstream import EventPublisher
from smithy_core.exceptions import CallError, SmithyError, SmithyIdentityError
from smithy_http.aio.interfaces import HTTPClient

from streaming import counters
from streaming.audio.codec import SAMPLE_RATE
from streaming.providers.base import Transcript
from switchboard.observability import logger

_BYTES_PER_MS: Final = 2 * SAMPLE_RATE // 1000
# How long closing a replaced stream may take before it is abandoned: it is already of no use.
_DISCARD_S: Final = 1.0
_RETRY_CREDENTIALS_S: Final = 5.0
_REOPENED_METRIC: Final = "TranscribeStreamReopened"
_DROPPED_METRIC: Final = "TranscribeAudioDroppedMs"

TranscribeStream = DuplexEventStream[AudioStream, TranscriptResultStream, StartStreamTranscriptionOutput]


class TranscribeClient(Protocol):
    """The one call of AsyncTranscribeStreamingClient the adapter uses: the seam the tests stand a fake in."""

    async def start_stream_transcription(self, input: StartStreamTranscriptionInput) -> TranscribeStream: ...


class TranscribeError(RuntimeError):
    """Transcribe refused the session for good (bad request, access denied, no credentials), or kept
    failing after every retry."""


class TranscribeSettings(BaseModel):
    """How the adapter talks to Transcribe. The defaults are for production; tests shrink the times."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stability: Literal["low", "medium", "high"] = Field(
        default="high",
        description="Partial-result stability. High makes words stable soonest (slightly less accurate "
        "partials; finals are re-decoded anyway): the engine starts replies on stable partials.",
    )
    chunk_ms: int = Field(
        default=60,
        ge=20,
        le=500,
        description="Audio per AudioEvent. AWS recommends 50-200 ms; a frame waits for the rest of its event "
        "(30 ms on average at 60 ms, on every turn's latency), at 17 signed events a second instead of 50 at "
        "20 ms. Whole 20 ms frames: 60 is the smallest size inside AWS's range.",
    )
    keepalive_after_ms: int = Field(
        default=3_000,
        ge=20,
        le=10_000,
        description="Without caller audio this long, send silence in real time (Transcribe gives up at ~15 s).",
    )
    replay_limit_ms: int = Field(
        default=15_000,
        ge=1_000,
        le=60_000,
        description="The most audio kept for a replay: since the last final, up to this much (240 kB a "
        "call at the default). Older audio is dropped first.",
    )
    stream_limit_s: float = Field(
        default=4 * 3600 - 300,
        gt=0,
        description="Replace a stream this old at the next pause (Transcribe's limit is 4 hours).",
    )
    stream_limit_grace_s: float = Field(
        default=120.0, ge=0, description="...or this long after it, pause or not, with a replay."
    )
    open_timeout_s: float = Field(default=10.0, gt=0, description="Longest wait for the SDK to start a stream.")
    close_timeout_s: float = Field(default=2.0, gt=0, description="Longest wait for Transcribe's last results.")
    reopen_backoff_s: tuple[float, ...] = Field(
        default=(0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
        min_length=1,
        description="Waits before successive attempts to replace a failed stream; one attempt per entry, "
        "then the session fails. A stream that delivered results resets the count.",
    )


# -- credentials ----------------------------------------------------------------------------------------


class BotocoreCredentials:
    """The SDK's AWS identity resolver, answered from botocore's credential chain (boto3.Session).

    The SDK asks for the identity for every event it signs (17 a second per call), so the answer is
    reused for `reuse_s` seconds; botocore is asked again after that, in a thread, because a refresh
    of temporary credentials is a blocking HTTP call (the container endpoint on Fargate).
    """

    def __init__(self, session: boto3.Session | None = None, *, reuse_s: float = 60.0) -> None:
        self._session = session or boto3.Session()
        self._reuse_s = reuse_s
        self._identity: AWSCredentialsIdentity | None = None
        self._until = 0.0
        self._lock = asyncio.Lock()

    async def get_identity(self, *, properties: AWSIdentityProperties) -> AWSCredentialsIdentity:
        identity = self._identity
        if identity is not None and time.monotonic() < self._until:
            return identity
        async with self._lock:
            if self._identity is not None and time.monotonic() < self._until:
                return self._identity
            try:
                fresh = await asyncio.to_thread(self._resolve)
            except SmithyIdentityError:
                if self._identity is None:
                    raise
                # botocore refreshes well before expiry: the last answer still signs while its source
                # (the container endpoint) hiccups. Ask again soon rather than fail every call.
                logger.warning("could not refresh AWS credentials; using the last ones", exc_info=True)
                self._until = time.monotonic() + _RETRY_CREDENTIALS_S
                return self._identity
            self._identity = fresh
            self._until = time.monotonic() + self._reuse_s
            return fresh

    async def invalidate(self) -> None:
        self._identity = None

    def _resolve(self) -> AWSCredentialsIdentity:
        try:
            credentials = self._session.get_credentials()
            frozen = credentials.get_frozen_credentials() if credentials is not None else None
        except Exception as exc:  # botocore raises a dozen kinds; all mean "no usable credentials"
            raise SmithyIdentityError(f"could not load AWS credentials: {exc}") from exc
        if frozen is None or not frozen.access_key or not frozen.secret_key:
            raise SmithyIdentityError(
                "no AWS credentials found (looked in the environment, the shared config files, the "
                "container credentials endpoint and instance metadata)"
            )
        return AWSCredentialsIdentity(
            access_key_id=frozen.access_key, secret_access_key=frozen.secret_key, session_token=frozen.token
        )


# -- errors -----------------------------------------------------------------------------------------------


class _StreamEnded(Exception):
    """Transcribe ended a stream that was still wanted."""


class _Replace(Exception):
    """This stream is replaced on purpose: its age, or audio it could not take in time."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_PASSING: Final = (
    _Replace,
    InternalFailureException,
    ServiceUnavailableException,
    LimitExceededException,
    ConflictException,
    _StreamEnded,
    OSError,  # the SDK's "Failed to read from/write to stream": the HTTP/2 connection is gone
    TimeoutError,
)


def _may_pass(error: BaseException) -> bool:
    """Whether a new stream may succeed where this one failed."""
    if isinstance(error, _PASSING):
        return True
    if isinstance(error, BadRequestException | SmithyIdentityError):
        return False
    if isinstance(error, CallError):
        # Unmodeled HTTP errors: 403 (access denied) and other 4xx will not pass; 5xx, throttling may.
        return error.fault == "server" or bool(error.is_retry_safe) or error.is_throttling_error
    if isinstance(error, SmithyError):
        # The SDK wraps transport failures (awscrt errors: connection refused, reset) in a bare SmithyError.
        return error.__cause__ is not None and not isinstance(error.__cause__, SmithyError)
    return False


def _describe(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return f"{type(error).__name__}: {message}"


# -- transcripts from results -----------------------------------------------------------------------------


def _spelled(items: Iterable[Item]) -> str:
    """Items as Transcribe spells them in a transcript: words apart, punctuation against the word before."""
    text = ""
    for item in items:
        content = item.content or ""
        if not content:
            continue
        if text and item.type != "punctuation":
            text += " "
        text += content
    return text


def stable_prefix(items: list[Item] | None, text: str) -> str:
    """The leading run of items Transcribe marked stable, as text (all of `text` if every item is)."""
    if not items:
        return ""
    stable: list[Item] = []
    for item in items:
        if not item.stable:
            return _spelled(stable)
        stable.append(item)
    return text


@dataclass
class _Silence:
    """Keepalive silence sent at `at` (bytes into the stream), `length` bytes, after `before` bytes of
    earlier silence in the same stream."""

    at: int
    length: int
    before: int


@dataclass
class _StreamState:
    """One Transcribe stream of a session: where it starts in the caller's audio, what it was sent."""

    stream: TranscribeStream
    base: int  # the session byte its time 0 is
    opened_at: float
    written: int = 0  # bytes sent on it, caller audio and silence
    silences: list[_Silence] = field(default_factory=list)
    segment_open: bool = False
    delivered: bool = False  # it has produced at least one event: a healthy stream

    def session_byte(self, seconds: float) -> int:
        """Where a stream time falls in the session's caller audio (keepalive silence removed)."""
        position = round(seconds * 1000) * _BYTES_PER_MS
        silences = self.silences
        index = bisect_right(silences, position, key=lambda silence: silence.at) - 1
        if index >= 0:
            silence = silences[index]
            position -= silence.before + min(position - silence.at, silence.length)
        return self.base + position


# -- the session --------------------------------------------------------------------------------------------


class TranscribeSpeechSession:
    """One caller's audio to Transcribe, for the length of a call (see the module's docstring)."""

    def __init__(
        self, client: TranscribeClient, request: StartStreamTranscriptionInput, settings: TranscribeSettings
    ) -> None:
        self._client = client
        self._request = request
        self._settings = settings
        self._chunk = settings.chunk_ms * _BYTES_PER_MS
        self._replay_limit = settings.replay_limit_ms * _BYTES_PER_MS
        # Caller audio from session byte `_kept` to `_received`: unsent, and sent but not yet final.
        self._audio = bytearray()
        self._kept = 0
        self._received = 0
        self._sent = 0  # session byte up to which the current stream has the caller's audio
        self._dropped = 0  # unsent audio dropped because the stream could not take it
        self._last_audio_at = 0.0
        self._wake = asyncio.Event()  # for the writer: a chunk is ready, or closing
        self._nudge = asyncio.Event()  # for the watcher: a segment closed, audio overflowed, or closing
        self._results: asyncio.Queue[Transcript | BaseException | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._failure: TranscribeError | None = None
        self._closing = False

    # -- the SpeechSession interface ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the first stream; errors that are already known (credentials, configuration) raise here."""
        self._last_audio_at = asyncio.get_running_loop().time()
        state = await self._open()
        self._task = asyncio.create_task(self._supervise(state), name="transcribe-session")

    async def send_audio(self, pcm16: bytes) -> None:
        if self._closing:
            return
        if self._failure is not None:
            raise self._failure
        self._audio += pcm16
        self._received += len(pcm16)
        self._last_audio_at = asyncio.get_running_loop().time()
        excess = self._received - self._kept - self._replay_limit
        if excess > 0:
            self._trim(self._kept + excess + excess % 2)
            if self._kept > self._sent:
                # The stream has not taken audio for replay_limit_ms: it is stuck. Restart it from what is kept.
                self._dropped += self._kept - self._sent
                self._nudge.set()
        if self._received - self._sent >= self._chunk:
            self._wake.set()

    async def transcripts(self) -> AsyncGenerator[Transcript]:
        while True:
            item = await self._results.get()
            if item is None:
                self._results.put_nowait(None)  # for a second reader, and for aclose
                return
            if isinstance(item, BaseException):
                self._results.put_nowait(None)
                raise item
            yield item

    async def aclose(self) -> None:
        """End the audio cleanly (Transcribe finalizes what it has), wait briefly for that, stop everything."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._nudge.set()
        task = self._task
        if task is not None and not task.done():
            try:
                async with asyncio.timeout(self._settings.close_timeout_s):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            except Exception:  # noqa: S110 - already delivered to transcripts() by the task itself
                pass
        self._results.put_nowait(None)

    # -- streams ---------------------------------------------------------------------------------------------

    async def _open(self) -> _StreamState:
        """A new stream whose time 0 is the oldest audio kept, which it will be sent again."""
        async with asyncio.timeout(self._settings.open_timeout_s):
            stream = await self._client.start_stream_transcription(input=self._request)
        self._sent = self._kept
        state = _StreamState(stream, base=self._kept, opened_at=asyncio.get_running_loop().time())
        self._dropped = 0
        return state

    async def _supervise(self, state: _StreamState) -> None:
        settings = self._settings
        failures = 0
        try:
            while True:
                error = await self._run(state)
                if state.delivered:
                    failures = 0
                if error is None or self._closing:
                    return
                if not _may_pass(error):
                    raise TranscribeError(f"Amazon Transcribe refused the stream: {_describe(error)}") from error
                reason = error.reason if isinstance(error, _Replace) else type(error).__name__
                counters.count(_REOPENED_METRIC, reason=reason)
                if self._dropped:
                    counters.count(_DROPPED_METRIC, value=self._dropped // _BYTES_PER_MS)
                # Replacing an old stream is routine (every few hours); anything else is worth a look.
                log = logger.info if reason == "age" else logger.warning
                log(
                    "replacing the Transcribe stream",
                    extra={"reason": _describe(error), "replay_ms": (self._received - self._kept) // _BYTES_PER_MS},
                )
                while True:
                    if not isinstance(error, _Replace):
                        if failures >= len(settings.reopen_backoff_s):
                            raise TranscribeError(
                                f"Amazon Transcribe failed {failures} times in a row; last: {_describe(error)}"
                            ) from error
                        await asyncio.sleep(settings.reopen_backoff_s[failures])
                        failures += 1
                    if self._closing:
                        return
                    try:
                        state = await self._open()
                        break
                    except Exception as exc:
                        if not _may_pass(exc):
                            raise TranscribeError(f"Amazon Transcribe refused the stream: {_describe(exc)}") from exc
                        error = exc
        except TranscribeError as exc:
            self._failure = exc
            logger.error("the Transcribe session failed", extra={"reason": str(exc)})
            self._results.put_nowait(exc)
        finally:
            self._results.put_nowait(None)

    async def _run(self, state: _StreamState) -> BaseException | None:
        """Feed and read one stream until it fails, must be replaced, or the session closes (None)."""
        tasks = [
            asyncio.create_task(self._write(state), name="transcribe-write"),
            asyncio.create_task(self._read(state), name="transcribe-read"),
            asyncio.create_task(self._watch(state), name="transcribe-watch"),
        ]
        error: BaseException | None = None
        try:
            pending: set[asyncio.Task[None]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                failed = [task for task in done if task.exception() is not None]
                if failed:
                    error = failed[0].exception()
                    break
                if self._closing and tasks[1] in done:
                    break  # Transcribe has given its last results; nothing more to wait for
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await _discard(state.stream)
        return error

    async def _write(self, state: _StreamState) -> None:
        publisher = state.stream.input_stream
        loop = asyncio.get_running_loop()
        chunk = self._chunk
        chunk_s = chunk / _BYTES_PER_MS / 1000
        keepalive_s = self._settings.keepalive_after_ms / 1000
        while True:
            if self._sent < self._kept:
                raise _Replace("stalled")  # audio it was not sent yet was dropped: restart from what is kept
            pending = self._received - self._sent
            if self._closing:
                while self._received > self._sent:
                    await self._send_audio(publisher, state, min(chunk, self._received - self._sent))
                await publisher.close()  # the end frame: Transcribe finalizes and ends its output
                return
            if pending >= chunk:
                await self._send_audio(publisher, state, chunk)
                continue
            self._wake.clear()
            if pending > 0:
                # The rest of a chunk comes within a chunk's time while audio flows; otherwise send what there is.
                if not await _wait(self._wake, chunk_s):
                    await self._send_audio(publisher, state, pending)
                continue
            idle_s = loop.time() - self._last_audio_at
            if idle_s < keepalive_s:
                await _wait(self._wake, keepalive_s - idle_s)
            elif not await _wait(self._wake, chunk_s) and self._received == self._sent:
                await self._send_silence(publisher, state, chunk)

    async def _send_audio(self, publisher: EventPublisher[AudioStream], state: _StreamState, size: int) -> None:
        start = self._sent - self._kept
        audio = bytes(self._audio[start : start + size])
        self._sent += size
        state.written += size
        await publisher.send(AudioStreamAudioEvent(value=AudioEvent(audio_chunk=audio)))

    async def _send_silence(self, publisher: EventPublisher[AudioStream], state: _StreamState, size: int) -> None:
        silences = state.silences
        last = silences[-1] if silences else None
        if last is not None and last.at + last.length == state.written:
            last.length += size  # one gap, one entry
        else:
            before = last.before + last.length if last is not None else 0
            silences.append(_Silence(at=state.written, length=size, before=before))
        state.written += size
        await publisher.send(AudioStreamAudioEvent(value=AudioEvent(audio_chunk=bytes(size))))

    async def _read(self, state: _StreamState) -> None:
        _, receiver = await state.stream.await_output()
        while (event := await receiver.receive()) is not None:
            state.delivered = True
            if isinstance(event, TranscriptResultStreamTranscriptEvent):
                self._on_event(state, event.value)
            elif isinstance(value := getattr(event, "value", None), Exception):
                raise value  # the SDK's receiver raises these itself; a receiver that returns one is the same
            else:
                logger.debug("ignoring an unknown Transcribe event", extra={"event": type(event).__name__})
        if not self._closing:
            raise _StreamEnded("Transcribe ended the stream")

    async def _watch(self, state: _StreamState) -> None:
        """Ask for a replacement when the stream nears Transcribe's limit, or cannot keep up with the audio."""
        loop = asyncio.get_running_loop()
        settings = self._settings
        limit_at = state.opened_at + settings.stream_limit_s
        while not self._closing:
            if self._sent < self._kept:
                raise _Replace("stalled")
            now = loop.time()
            if now >= limit_at and (not state.segment_open or now >= limit_at + settings.stream_limit_grace_s):
                raise _Replace("age")
            self._nudge.clear()
            deadline = limit_at if now < limit_at else limit_at + settings.stream_limit_grace_s
            await _wait(self._nudge, max(0.0, deadline - now))

    def _on_event(self, state: _StreamState, event: TranscriptEvent) -> None:
        results = event.transcript.results if event.transcript is not None else None
        for result in results or ():
            self._on_result(state, result)

    def _on_result(self, state: _StreamState, result: Result) -> None:
        final = not result.is_partial
        state.segment_open = not final
        end = state.session_byte(result.end_time)
        if final:
            # Everything up to here is transcribed for good: no replay will need it again.
            self._trim(min(end, self._sent))
            self._nudge.set()
        alternative = result.alternatives[0] if result.alternatives else None
        text = (alternative.transcript or "") if alternative is not None else ""
        if not text:
            return
        stable = text if final else stable_prefix(alternative.items if alternative is not None else None, text)
        self._results.put_nowait(
            Transcript(
                segment_id=result.result_id or f"segment-{state.base}-{result.start_time}",
                text=text,
                stable_text=stable,
                is_final=final,
                start_ms=state.session_byte(result.start_time) // _BYTES_PER_MS,
                end_ms=end // _BYTES_PER_MS,
            )
        )

    def _trim(self, to: int) -> None:
        if to > self._kept:
            del self._audio[: to - self._kept]
            self._kept = to


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Whether `event` was set within `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def _discard(stream: TranscribeStream) -> None:
    """Close a stream that is done with, whatever state it is in, without waiting long for it.

    Closing the input sends the end frame where the connection still works (a stream replaced for its
    age ends cleanly) and releases the request body where it does not.
    """
    try:
        async with asyncio.timeout(_DISCARD_S):
            with suppress(Exception):
                await stream.input_stream.close()
            _, receiver = await stream.await_output()
            await receiver.close()
    except Exception as exc:
        logger.debug("a replaced Transcribe stream closed with an error", extra={"error": _describe(exc)})


# -- the provider -----------------------------------------------------------------------------------------


class TranscribeSpeechToText:
    """SpeechToText on Amazon Transcribe streaming: one client for the process, one session per call.

    Build it with `await TranscribeSpeechToText.create(region=...)` (botocore credentials, the CRT HTTP/2
    transport); the constructor takes any TranscribeClient, which is how the tests reach it.
    """

    def __init__(
        self,
        client: TranscribeClient,
        *,
        settings: TranscribeSettings | None = None,
        credentials: BotocoreCredentials | None = None,
        owned: AsyncTranscribeStreamingClient | None = None,
    ) -> None:
        self._client = client
        self._settings = settings or TranscribeSettings()
        self._credentials = credentials
        self._owned = owned

    @classmethod
    async def create(
        cls,
        *,
        region: str | None = None,
        session: boto3.Session | None = None,
        settings: TranscribeSettings | None = None,
        transport: HTTPClient | None = None,
    ) -> Self:
        """The production adapter: credentials from botocore's chain (the task role on Fargate), the region
        given or the session's (AWS_REGION), the CRT HTTP/2 transport unless another is given (the SDK's
        default aiohttp one cannot stream both ways). Checks the credentials now, so a service without
        them fails at start with a clear message instead of on the first call."""

        session = session or boto3.Session()
        region = region or session.region_name
        if not region:
            raise TranscribeError("no AWS region for Amazon Transcribe: set AWS_REGION or pass region=")
        credentials = BotocoreCredentials(session)
        await _check(credentials)
        if transport is None:
            from smithy_http.aio.crt import AWSCRTHTTPClient  # imports awscrt: only where it is used

            transport = AWSCRTHTTPClient()
        config = await AsyncTranscribeStreamingConfig.resolve(
            region=region, aws_credentials_identity_resolver=credentials, transport=transport
        )
        client = AsyncTranscribeStreamingClient(config=config)
        return cls(client, settings=settings, credentials=credentials, owned=client)

    async def start(self, *, language: str, vocabulary: str | None = None) -> TranscribeSpeechSession:
        if self._credentials is not None:
            await _check(self._credentials)
        settings = self._settings
        request = StartStreamTranscriptionInput(
            language_code=language,
            media_encoding=MediaEncoding.PCM,
            media_sample_rate_hertz=SAMPLE_RATE,
            vocabulary_name=vocabulary,
            enable_partial_results_stabilization=True,
            partial_results_stability=settings.stability,
        )
        session = TranscribeSpeechSession(self._client, request, settings)
        try:
            await session.start()
        except TranscribeError:
            raise
        except Exception as exc:
            raise TranscribeError(f"could not start an Amazon Transcribe stream: {_describe(exc)}") from exc
        return session

    async def aclose(self) -> None:
        """Close the client this adapter built (its HTTP/2 connections)."""
        if self._owned is not None:
            await self._owned.close()


async def _check(credentials: BotocoreCredentials) -> None:
    try:
        await credentials.get_identity(properties={})
    except SmithyIdentityError as exc:
        raise TranscribeError(f"Amazon Transcribe needs AWS credentials: {exc}") from exc
