"""The Transcribe adapter, driven through its client seam by a fake Transcribe that speaks the SDK's types.

FakeTranscribe stands where AsyncTranscribeStreamingClient stands: `start_stream_transcription` returns a
real DuplexEventStream whose input side records the AudioStream events the adapter sends and whose output
side gives TranscriptResultStream events (TranscriptEvent, Result, Alternative, Item with `stable`) and
raises the SDK's modeled exceptions the way the SDK's own receiver does.
"""

import asyncio
import struct
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from aws_sdk_transcribe_streaming.models import (
    Alternative,
    AudioStream,
    AudioStreamAudioEvent,
    BadRequestException,
    InternalFailureException,
    Item,
    Result,
    ServiceUnavailableException,
    StartStreamTranscriptionInput,
    StartStreamTranscriptionOutput,
    TranscriptEvent,
    TranscriptResultStream,
    TranscriptResultStreamBadRequestException,
    TranscriptResultStreamInternalFailureException,
    TranscriptResultStreamTranscriptEvent,
)
from aws_sdk_transcribe_streaming.models import Transcript as SdkTranscript
from smithy_core.aio.eventstream import DuplexEventStream
from smithy_core.aio.interfaces.eventstream import EventPublisher, EventReceiver
from smithy_core.exceptions import SmithyError

from streaming.providers.base import SpeechToText, Transcript
from streaming.providers.transcribe import (
    TranscribeError,
    TranscribeSettings,
    TranscribeSpeechSession,
    TranscribeSpeechToText,
    TranscribeStream,
    stable_prefix,
)

BYTES_PER_MS = 16
FRAME = 320  # 20 ms


def frames(first: int, count: int) -> list[bytes]:
    """20 ms frames whose every sample is the frame's number: any slice of the audio says where it came from."""
    return [struct.pack("<h", index + 1) * (FRAME // 2) for index in range(first, first + count)]


def audio(first: int, count: int) -> bytes:
    return b"".join(frames(first, count))


class RecordingPublisher(EventPublisher[AudioStream]):
    """The request side of a stream: records what the adapter sends, as Transcribe would receive it."""

    def __init__(self, on_close: Callable[[], None]) -> None:
        self.events: list[AudioStream] = []
        self.closed = False
        self.gate: asyncio.Event | None = None  # set to an unset Event: sends block, like a stalled connection
        self._on_close = on_close
        self._changed = asyncio.Event()

    async def send(self, event: AudioStream) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.closed:
            raise OSError("Attempted to write to closed stream.")
        self.events.append(event)
        self._changed.set()

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._changed.set()
            self._on_close()

    @property
    def chunks(self) -> list[bytes]:
        chunks = []
        for event in self.events:
            assert isinstance(event, AudioStreamAudioEvent)
            assert event.value.audio_chunk is not None
            chunks.append(event.value.audio_chunk)
        return chunks

    @property
    def audio(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def caller_audio(self) -> bytes:
        """What was sent, less the keepalive silence (caller frames here are never zero)."""
        return b"".join(chunk for chunk in self.chunks if any(chunk))

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self._changed.clear()
            await self._changed.wait()


class ScriptedReceiver(EventReceiver[TranscriptResultStream]):
    """The response side: gives what the test queues; raises modeled errors as the SDK's AWSEventReceiver does."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[TranscriptResultStream | Exception | None] = asyncio.Queue()
        self.closed = False

    async def receive(self) -> TranscriptResultStream | None:
        if self.closed:
            return None
        item = await self.queue.get()
        if item is None:
            return None
        if isinstance(item, Exception):
            raise item
        value = getattr(item, "value", None)
        if isinstance(value, Exception):
            await self.close()
            raise value
        return item

    async def close(self) -> None:
        self.closed = True
        self.queue.put_nowait(None)


class FakeStream:
    def __init__(self, request: StartStreamTranscriptionInput, refusal: Exception | None) -> None:
        self.request = request
        self.receiver = ScriptedReceiver()
        # Transcribe ends its output once the audio has ended (after the last finals, queued before).
        self.publisher = RecordingPublisher(on_close=lambda: self.receiver.queue.put_nowait(None))
        output: asyncio.Future[tuple[StartStreamTranscriptionOutput, EventReceiver[TranscriptResultStream]]]
        output = asyncio.get_running_loop().create_future()
        if refusal is None:
            output.set_result((StartStreamTranscriptionOutput(language_code=request.language_code), self.receiver))
        else:
            output.set_exception(refusal)  # what await_output raises when the HTTP response is an error
        self.duplex: TranscribeStream = DuplexEventStream(input_stream=self.publisher, output_future=output)

    def results(self, *results: Result) -> None:
        event = TranscriptEvent(transcript=SdkTranscript(results=list(results)))
        self.receiver.queue.put_nowait(TranscriptResultStreamTranscriptEvent(value=event))

    def event(self, event: TranscriptResultStream | Exception | None) -> None:
        self.receiver.queue.put_nowait(event)


class FakeTranscribe:
    """Stands where AsyncTranscribeStreamingClient stands."""

    def __init__(self) -> None:
        self.streams: list[FakeStream] = []
        self.refusals: list[Exception] = []  # the next streams' await_output raise these, in order
        self.open_errors: list[Exception] = []  # the next start_stream_transcription calls raise these
        self._opened = asyncio.Event()

    async def start_stream_transcription(self, input: StartStreamTranscriptionInput) -> TranscribeStream:
        if self.open_errors:
            raise self.open_errors.pop(0)
        stream = FakeStream(input, self.refusals.pop(0) if self.refusals else None)
        self.streams.append(stream)
        self._opened.set()
        return stream.duplex

    async def stream(self, index: int) -> FakeStream:
        while len(self.streams) <= index:
            self._opened.clear()
            await self._opened.wait()
        return self.streams[index]


def transport_error(cause: Exception) -> SmithyError:
    """A connection failure as the SDK reports it from start_stream_transcription (`raise SmithyError(e) from e`)."""
    error = SmithyError(cause)
    error.__cause__ = cause
    return error


def word(content: str, start: float, end: float, *, stable: bool = True) -> Item:
    kind = "punctuation" if content in {",", ".", "?", "!"} else "pronunciation"
    return Item(content=content, start_time=start, end_time=end, type=kind, stable=stable)


def result(result_id: str, text: str, start: float, end: float, *, partial: bool, items: Sequence[Item] = ()) -> Result:
    return Result(
        result_id=result_id,
        start_time=start,
        end_time=end,
        is_partial=partial,
        alternatives=[Alternative(transcript=text, items=list(items))],
    )


# The tests count audio in 100 ms events (AWS's range; the production default is smaller).
FAST = TranscribeSettings(chunk_ms=100, reopen_backoff_s=(0.0, 0.0, 0.0))


async def start(fake: FakeTranscribe, settings: TranscribeSettings = FAST) -> TranscribeSpeechSession:
    stt: SpeechToText = TranscribeSpeechToText(fake, settings=settings)
    session = await stt.start(language="en-US")
    assert isinstance(session, TranscribeSpeechSession)
    return session


async def send(session: TranscribeSpeechSession, chunks: Sequence[bytes]) -> None:
    for chunk in chunks:
        await session.send_audio(chunk)


def no_tasks_left() -> bool:
    return not [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]


async def test_the_stream_asks_for_8khz_pcm_stabilized_partials_the_language_and_the_vocabulary() -> None:
    fake = FakeTranscribe()
    session = await TranscribeSpeechToText(fake).start(language="es-US", vocabulary="clinic-terms")

    request = fake.streams[0].request
    assert request.language_code == "es-US"
    assert request.media_encoding == "pcm"
    assert request.media_sample_rate_hertz == 8000
    assert request.vocabulary_name == "clinic-terms"
    assert request.enable_partial_results_stabilization is True
    assert request.partial_results_stability == "high"
    await session.aclose()


async def test_no_vocabulary_sends_none() -> None:
    fake = FakeTranscribe()
    session = await start(fake)
    assert fake.streams[0].request.vocabulary_name is None
    await session.aclose()


async def test_audio_goes_in_100ms_audio_events_and_the_rest_at_close() -> None:
    fake = FakeTranscribe()
    session = await start(fake)
    stream = fake.streams[0]

    await send(session, frames(0, 12))  # 240 ms
    await stream.publisher.until(lambda: len(stream.publisher.events) >= 2)

    assert stream.publisher.chunks == [audio(0, 5), audio(5, 5)]  # 1600 bytes = 100 ms each
    await session.aclose()
    assert stream.publisher.chunks[2:] == [audio(10, 2)]  # the last 40 ms, sent before the end of the stream
    assert stream.publisher.closed


async def test_partials_carry_the_stable_prefix_and_the_final_is_all_stable() -> None:
    fake = FakeTranscribe()
    session = await start(fake)
    stream = fake.streams[0]
    transcripts = session.transcripts()
    await send(session, frames(0, 50))

    stream.results(
        result(
            "seg-1",
            "Hello, I need",
            0.12,
            0.9,
            partial=True,
            items=[
                word("Hello", 0.12, 0.4),
                word(",", 0.4, 0.4),
                word("I", 0.45, 0.5),
                word("need", 0.55, 0.9, stable=False),
            ],
        )
    )
    stream.results(
        result(
            "seg-1",
            "Hello, I need a nurse.",
            0.12,
            1.3,
            partial=False,
            items=[word("Hello", 0.12, 0.4), word(",", 0.4, 0.4), word("nurse", 1.0, 1.3, stable=False)],
        )
    )

    assert await anext(transcripts) == Transcript("seg-1", "Hello, I need", "Hello, I", False, 120, 900)
    assert await anext(transcripts) == Transcript(
        "seg-1", "Hello, I need a nurse.", "Hello, I need a nurse.", True, 120, 1300
    )
    await session.aclose()


def test_stable_prefix_is_the_leading_run_of_stable_items() -> None:
    items = [word("Book", 0, 0.2), word("it", 0.2, 0.3, stable=False), word("now", 0.3, 0.5)]
    assert stable_prefix(items, "Book it now") == "Book"
    assert stable_prefix([word("yes", 0, 0.2), word(".", 0.2, 0.2)], "Yes.") == "Yes."
    assert stable_prefix([word("maybe", 0, 0.2, stable=False)], "maybe") == ""
    assert stable_prefix(None, "anything") == ""


async def test_a_media_gap_is_filled_with_silence_that_results_do_not_count() -> None:
    fake = FakeTranscribe()
    session = await start(fake, TranscribeSettings(chunk_ms=20, keepalive_after_ms=40))
    stream = fake.streams[0]
    publisher = stream.publisher
    transcripts = session.transcripts()

    await send(session, frames(0, 5))  # 100 ms, then the media stops
    await publisher.until(lambda: len(publisher.chunks) - len(publisher.caller_audio) // FRAME >= 3)
    silence = [chunk for chunk in publisher.chunks if not any(chunk)]
    assert silence
    assert all(len(chunk) == FRAME for chunk in silence)  # real-time silence, one chunk at a time

    await send(session, frames(5, 5))  # the caller is back
    await publisher.until(lambda: len(publisher.caller_audio) == 10 * FRAME)
    assert publisher.caller_audio == audio(0, 10)
    resumed_ms = publisher.chunks.index(frames(5, 1)[0]) * 20  # stream time: caller audio plus the silence
    assert resumed_ms > 100

    # Times on the stream, around and inside the silence, come back as times of the caller's audio.
    stream.results(result("a", "hi.", 0.0, (100 + 30) / 1000, partial=False))
    stream.results(result("b", "it's me.", resumed_ms / 1000, (resumed_ms + 60) / 1000, partial=False))
    assert (await anext(transcripts)).end_ms == 100
    later = await anext(transcripts)
    assert (later.start_ms, later.end_ms) == (100, 160)
    await session.aclose()


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(
            TranscriptResultStreamInternalFailureException(value=InternalFailureException(message="try again")),
            id="internal-failure",
        ),
        pytest.param(OSError("Failed to read from stream."), id="connection-died"),
        pytest.param(None, id="stream-ended"),
    ],
)
async def test_a_failed_stream_is_replaced_and_fed_what_was_not_final(failure: TranscriptResultStream | None) -> None:
    fake = FakeTranscribe()
    session = await start(fake)
    first = fake.streams[0]
    transcripts = session.transcripts()
    await send(session, frames(0, 50))  # 1 s
    await first.publisher.until(lambda: len(first.publisher.audio) == 1000 * BYTES_PER_MS)

    first.results(result("r1", "Hello.", 0.0, 0.4, partial=False))
    first.results(result("r2", "I need", 0.5, 0.9, partial=True, items=[word("I", 0.5, 0.6)]))
    assert (await anext(transcripts)).text == "Hello."
    assert (await anext(transcripts)).text == "I need"
    first.event(failure)

    second = await fake.stream(1)
    # The audio after the last final, and nothing before it: "Hello." cannot come twice.
    await second.publisher.until(lambda: len(second.publisher.audio) == 600 * BYTES_PER_MS)
    assert second.publisher.audio == audio(20, 30)
    await send(session, frames(50, 10))
    await second.publisher.until(lambda: len(second.publisher.audio) == 800 * BYTES_PER_MS)
    assert second.publisher.audio == audio(20, 40)

    second.results(result("r3", "I need an appointment.", 0.1, 0.5, partial=False))
    replaced = await anext(transcripts)
    assert replaced == Transcript("r3", "I need an appointment.", "I need an appointment.", True, 500, 900)
    assert second.request == first.request
    await session.aclose()
    assert len(fake.streams) == 2


async def test_a_failure_to_reconnect_is_retried() -> None:
    fake = FakeTranscribe()
    session = await start(fake)
    transcripts = session.transcripts()
    await send(session, frames(0, 10))
    fake.open_errors = [transport_error(ConnectionResetError("reset"))]
    fake.refusals = [ServiceUnavailableException(message="busy")]
    fake.streams[0].event(OSError("Failed to read from stream."))

    third = await fake.stream(2)
    await third.publisher.until(lambda: third.publisher.audio == audio(0, 10))
    third.results(result("r1", "Hi.", 0.0, 0.2, partial=False))
    assert (await anext(transcripts)).text == "Hi."
    await session.aclose()


async def test_an_old_stream_is_replaced_at_a_pause() -> None:
    fake = FakeTranscribe()
    session = await start(fake, TranscribeSettings(stream_limit_s=0.2, stream_limit_grace_s=60))
    first = fake.streams[0]
    transcripts = session.transcripts()
    await send(session, frames(0, 25))
    first.results(result("r1", "Yes.", 0.1, 0.3, partial=False))
    assert (await anext(transcripts)).text == "Yes."

    second = await fake.stream(1)
    assert first.publisher.closed  # ended cleanly, not dropped
    await second.publisher.until(lambda: len(second.publisher.audio) == 200 * BYTES_PER_MS)
    assert second.publisher.audio == audio(15, 10)
    second.results(result("r2", "No.", 0.0, 0.1, partial=False))
    assert (await anext(transcripts)).start_ms == 300
    await session.aclose()


async def test_an_old_stream_in_mid_sentence_is_replaced_after_the_grace_with_a_replay() -> None:
    fake = FakeTranscribe()
    session = await start(fake, TranscribeSettings(chunk_ms=100, stream_limit_s=0.05, stream_limit_grace_s=0.0))
    first = fake.streams[0]
    transcripts = session.transcripts()
    await send(session, frames(0, 25))
    first.results(result("r1", "I would", 0.1, 0.3, partial=True, items=[word("I", 0.1, 0.2)]))
    assert (await anext(transcripts)).text == "I would"

    second = await fake.stream(1)
    await second.publisher.until(lambda: len(second.publisher.audio) == 500 * BYTES_PER_MS)
    assert second.publisher.audio == audio(0, 25)  # nothing final yet: all of it again
    second.results(result("r2", "I would like to.", 0.1, 0.45, partial=False))
    assert await anext(transcripts) == Transcript("r2", "I would like to.", "I would like to.", True, 100, 450)
    await session.aclose()


async def test_a_stream_that_cannot_take_the_audio_is_restarted_from_the_newest_audio_kept() -> None:
    fake = FakeTranscribe()
    session = await start(fake, TranscribeSettings(replay_limit_ms=1000))
    first = fake.streams[0]
    first.publisher.gate = asyncio.Event()  # the connection takes nothing more
    transcripts = session.transcripts()

    await send(session, frames(0, 80))  # 1.6 s: 600 ms more than may be kept

    second = await fake.stream(1)
    await second.publisher.until(lambda: len(second.publisher.audio) == 1000 * BYTES_PER_MS)
    assert second.publisher.audio == audio(30, 50)  # the oldest 600 ms dropped, the rest in order
    second.results(result("r1", "Hello?", 0.0, 0.3, partial=False))
    assert (await anext(transcripts)).start_ms == 600
    await session.aclose()


async def test_a_bad_request_ends_transcripts_with_transcribes_message() -> None:
    fake = FakeTranscribe()
    session = await start(fake)
    transcripts = session.transcripts()
    fake.streams[0].event(
        TranscriptResultStreamBadRequestException(
            value=BadRequestException(message="The requested vocabulary couldn't be found.")
        )
    )

    with pytest.raises(TranscribeError, match="vocabulary couldn't be found"):
        await anext(transcripts)
    with pytest.raises(TranscribeError):
        await session.send_audio(frames(0, 1)[0])
    assert len(fake.streams) == 1  # not retried
    await session.aclose()
    assert no_tasks_left()


async def test_a_refused_stream_ends_transcripts() -> None:
    fake = FakeTranscribe()
    fake.refusals = [BadRequestException(message="Your request has an unsupported language code.")]
    session = await start(fake)

    with pytest.raises(TranscribeError, match="unsupported language code"):
        await anext(session.transcripts())
    assert len(fake.streams) == 1
    await session.aclose()


async def test_it_gives_up_after_the_last_backoff() -> None:
    fake = FakeTranscribe()
    fake.refusals = [ServiceUnavailableException(message="busy")] * 10
    session = await start(fake)

    with pytest.raises(TranscribeError, match=r"failed 3 times in a row; last: ServiceUnavailableException: busy"):
        await anext(session.transcripts())
    assert len(fake.streams) == 4  # the first, then one attempt per backoff entry
    await session.aclose()


async def test_a_start_that_fails_says_so() -> None:
    fake = FakeTranscribe()
    fake.open_errors = [transport_error(ConnectionRefusedError("refused"))]
    with pytest.raises(TranscribeError, match="could not start an Amazon Transcribe stream"):
        await TranscribeSpeechToText(fake).start(language="en-US")


async def test_aclose_ends_the_audio_the_transcripts_and_every_task() -> None:
    fake = FakeTranscribe()
    session = await start(fake)
    stream = fake.streams[0]
    transcripts: AsyncIterator[Transcript] = session.transcripts()
    await send(session, frames(0, 3))
    stream.results(result("r1", "Bye.", 0.0, 0.06, partial=False))
    assert (await anext(transcripts)).is_final

    await session.aclose()

    assert stream.publisher.closed
    assert stream.publisher.audio == audio(0, 3)
    with pytest.raises(StopAsyncIteration):
        await anext(transcripts)
    assert no_tasks_left()
    await session.send_audio(frames(3, 1)[0])  # after the end: ignored, as the engine may still hold a frame
    await session.aclose()  # twice is fine


async def test_aclose_does_not_wait_for_a_stuck_connection() -> None:
    fake = FakeTranscribe()
    session = await start(fake, TranscribeSettings(close_timeout_s=0.05))
    fake.streams[0].publisher.gate = asyncio.Event()
    await send(session, frames(0, 10))

    await session.aclose()

    assert no_tasks_left()
    with pytest.raises(StopAsyncIteration):
        await anext(session.transcripts())
