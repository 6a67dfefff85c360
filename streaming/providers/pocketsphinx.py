"""Speech-to-text offline with pocketsphinx, for the demo and the tests: US English only.

pocketsphinx's wheel ships a 16 kHz US English model (acoustic model, CMUdict, a 3-gram language model), so
this is the one place where the caller's 8 kHz audio is upsampled: the model's filter bank reaches 6.8 kHz
and was trained on 16 kHz audio; a phone line carries nothing above 4 kHz either way.

Per session, one worker thread does everything CPU-bound, never the event loop (measured: 0.19 s of CPU per
second of speech, next to nothing for silence, which the endpointer drops). It upsamples each frame (a soxr
stream, so frames join without clicks), cuts utterances with pocketsphinx's Endpointer (its VAD over a 0.3 s
window), feeds each utterance to the decoder and hands results to the loop: a partial whenever the hypothesis
changes while the caller speaks, and one final per utterance once the Endpointer hears it end. Times are this
session's audio ms.

`stable_text` of a partial is empty: pocketsphinx says nothing about stability, and its partial hypotheses
rewrite earlier words as the utterance goes on ("what are you are you to" became "what are you gonna do"
three frames later), so no prefix of a partial can be promised. The engine then waits for the final.

How well it hears: on eSpeak speech over the phone line (μ-law 8 kHz), about 40% of the words of a booking
sentence and 70% of a short question (tests/integration/test_offline_engines.py has the figures). Enough
for a demo whose scripted model matches keywords; not a production recogniser.

A Decoder cannot share its models with another one (pocketsphinx 5 has no API for it): each loads its own
~96 MB in 0.25-0.4 s. Decoders are therefore pooled per process: a session takes an idle one or builds one,
and gives it back when it closes, so a process holds as many decoders as it ever had sessions at once.
"""

import asyncio
import contextlib
import itertools
import queue
import re
import threading
from collections.abc import AsyncGenerator, Callable
from typing import Final

import numpy as np
import pocketsphinx
import soxr

from streaming.audio.codec import SAMPLE_RATE
from streaming.providers.base import Transcript
from switchboard.observability import logger

SUPPORTED_LANGUAGE: Final = "en-US"
DECODER_RATE: Final = 16_000
# The initial cepstral mean. The model's own (40,3,-1) is a prior for wideband audio; upsampled phone audio has
# nothing above 4 kHz, and until live CMN has adapted (over the first utterances) the decoder hears little.
# eSpeak speech through the 8 kHz μ-law path, word overlap from the model's prior -> from this one: 0.15 ->
# 0.52 (five held-out sentences, whole utterances), median 0.0 -> 0.4 (the booking sentence of the tests,
# streamed). It is the mean measured over eSpeak speech on that path (voices en-us and en-us+f2, averaged):
# a prior for the channel, which live CMN then adapts to the caller.
NARROWBAND_CMN: Final = "41.1,13.5,-24.2,33.7,-19.3,-1.8,0.8,-19.6,9.1,-11.5,1.5,2.1,-8.4"
# The decoder's frame rate (pocketsphinx's default -frate): word segment frames are 10 ms each.
_DECODER_FRAME_MS: Final = 10
# Decoder "words" that are not words: silence, noise and filler models, and sentence marks.
_NOT_A_WORD = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+)$")
_ALTERNATE = re.compile(r"\(\d+\)$")  # "read(2)": CMUdict's second pronunciation of "read"


class UnsupportedLanguage(ValueError):
    """pocketsphinx was asked for a language its shipped model does not speak."""


class _DecoderPool:
    """Idle decoders, kept for the next session (see the module docstring for why)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[pocketsphinx.Decoder] = []

    def take(self) -> pocketsphinx.Decoder:
        """An idle decoder, or a new one (blocking: 0.25-0.4 s of model loading), its cepstral mean reset:
        a session starts from the same prior whoever the last caller was."""
        with self._lock:
            decoder = self._idle.pop() if self._idle else None
        if decoder is None:
            return pocketsphinx.Decoder(loglevel="FATAL", cmninit=NARROWBAND_CMN)
        decoder.reinit_feat()
        return decoder

    def give(self, decoder: pocketsphinx.Decoder) -> None:
        with self._lock:
            self._idle.append(decoder)


_POOL: Final = _DecoderPool()
_CLOSE: Final = b""  # the frame queue's end marker (send_audio never queues an empty frame)


def _spoken_words(segments: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    return [(_ALTERNATE.sub("", word), start, end) for word, start, end in segments if not _NOT_A_WORD.match(word)]


class PocketsphinxSpeechSession:
    """One caller's audio through one pooled decoder, on a worker thread of its own."""

    def __init__(self, decoder: pocketsphinx.Decoder, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self._decoder = decoder
        self._loop = loop
        self._frames: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._results: asyncio.Queue[Transcript | BaseException | None] = asyncio.Queue()
        self._finished = loop.create_future()
        self._closed = False
        self._name = name
        self._thread = threading.Thread(target=self._run, name=f"pocketsphinx-{name}", daemon=True)
        self._thread.start()

    async def send_audio(self, pcm16: bytes) -> None:
        # Never waits: the frame is queued for the worker, which keeps up at several times real time.
        if not self._closed and pcm16:
            self._frames.put(pcm16)

    async def transcripts(self) -> AsyncGenerator[Transcript]:
        while (item := await self._results.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    async def aclose(self) -> None:
        """Stop taking audio; the worker decodes what it was given, ends an utterance in progress with its
        final, and the transcripts end after it."""
        if not self._closed:
            self._closed = True
            self._frames.put(_CLOSE)
        await asyncio.shield(self._finished)

    # -- the worker thread ----------------------------------------------------------------------------

    def _deliver(self, item: Transcript | BaseException | None) -> None:
        self._call_soon(self._results.put_nowait, item)

    def _call_soon(self, callback: Callable[..., object], *args: object) -> None:
        # RuntimeError: the loop has closed, nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def _run(self) -> None:
        try:
            _Decoding(self._decoder, self._name, self._deliver).run(self._frames)
        except Exception as error:  # a decoder that cannot go on: the engine logs, counts and reopens
            self._deliver(error)
        else:
            _POOL.give(self._decoder)
        finally:
            self._deliver(None)
            self._call_soon(self._set_finished)

    def _set_finished(self) -> None:
        if not self._finished.done():
            self._finished.set_result(None)


class _Decoding:
    """The worker's state: upsampler, endpointer, the utterance in progress."""

    def __init__(
        self, decoder: pocketsphinx.Decoder, name: str, deliver: Callable[[Transcript | BaseException | None], None]
    ) -> None:
        self._decoder = decoder
        self._name = name
        self._deliver = deliver
        self._upsampler = soxr.ResampleStream(SAMPLE_RATE, DECODER_RATE, 1, dtype="int16")
        self._endpointer = pocketsphinx.Endpointer(sample_rate=DECODER_RATE)
        self._pending = bytearray()  # upsampled audio short of a whole endpointer frame
        self._odd = b""  # a byte of a sample split across send_audio calls
        self._segments = itertools.count(1)
        self._segment_id = ""
        self._start_ms = 0
        self._text = ""

    def run(self, frames: "queue.SimpleQueue[bytes]") -> None:
        while (pcm16 := frames.get()) != _CLOSE:
            self._feed(pcm16)
        self._end_of_audio()

    def _feed(self, pcm16: bytes) -> None:
        data = self._odd + pcm16 if self._odd else pcm16
        whole = len(data) - len(data) % 2
        self._odd = data[whole:]
        upsampled = self._upsampler.resample_chunk(np.frombuffer(data[:whole], dtype="<i2"))
        self._pending += upsampled.astype("<i2", copy=False).tobytes()
        self._frames_of_pending()

    def _frames_of_pending(self) -> None:
        size = self._endpointer.frame_bytes
        while len(self._pending) >= size:
            frame = bytes(self._pending[:size])
            del self._pending[:size]
            self._frame(frame)

    def _frame(self, frame: bytes) -> None:
        endpointer = self._endpointer
        was_speaking = endpointer.in_speech
        speech = endpointer.process(frame)
        if speech is None:
            return
        if not was_speaking:
            self._start(endpointer.speech_start)
        self._decode(speech)
        if not endpointer.in_speech:
            self._finish(endpointer.speech_end)

    def _end_of_audio(self) -> None:
        """The session closes: an utterance still going on ends here, with its final."""
        endpointer = self._endpointer
        # The resampler holds back a few ms (its filter's delay) until told the stream is over.
        self._pending += self._upsampler.resample_chunk(np.zeros(0, dtype="<i2"), last=True).tobytes()
        self._frames_of_pending()
        if not endpointer.in_speech:
            return
        # end_stream fails on an empty buffer (IndexError in pocketsphinx 5.1): give it one silent sample.
        rest = endpointer.end_stream(bytes(self._pending) or bytes(2))
        if rest is not None:
            self._decode(rest)
        self._finish(endpointer.speech_end)

    def _start(self, at_s: float) -> None:
        self._segment_id = f"ps-{self._name}-{next(self._segments)}"
        self._start_ms = round(at_s * 1000)
        self._text = ""
        self._decoder.start_utt()

    def _decode(self, speech: bytes) -> None:
        decoder = self._decoder
        decoder.process_raw(speech)
        hypothesis = decoder.hyp()
        text = hypothesis.hypstr if hypothesis is not None else ""
        if text and text != self._text:
            self._text = text
            words = _spoken_words([(seg.word, seg.start_frame, seg.end_frame) for seg in decoder.seg()])
            self._emit(text, final=False, end_ms=self._word_end_ms(words))

    def _finish(self, at_s: float) -> None:
        decoder = self._decoder
        decoder.end_utt()
        hypothesis = decoder.hyp()
        text = hypothesis.hypstr if hypothesis is not None else ""
        words = _spoken_words([(seg.word, seg.start_frame, seg.end_frame) for seg in decoder.seg()])
        if text or self._text:
            # An empty final retracts the partials of an utterance that turned out to be no words.
            # The last word's end is when the caller stopped; the endpointer's end is its window later.
            self._emit(text, final=True, end_ms=self._word_end_ms(words) or round(at_s * 1000))
        logger.debug("pocketsphinx utterance", extra={"segment": self._segment_id, "words": len(words)})

    def _word_end_ms(self, words: list[tuple[str, int, int]]) -> int:
        if not words:
            return 0
        return self._start_ms + (words[-1][2] + 1) * _DECODER_FRAME_MS

    def _emit(self, text: str, *, final: bool, end_ms: int) -> None:
        end_ms = max(end_ms, self._start_ms)
        stable = text if final else ""
        self._deliver(Transcript(self._segment_id, text, stable, final, self._start_ms, end_ms))


class PocketsphinxSpeechToText:
    """SpeechToText offline. One instance serves every call of a process; it holds nothing per call."""

    def __init__(self) -> None:
        self._sessions = itertools.count(1)

    async def start(self, *, language: str, vocabulary: str | None = None) -> PocketsphinxSpeechSession:
        """A session; `vocabulary` (a Transcribe custom vocabulary's name) means nothing to pocketsphinx."""
        if language != SUPPORTED_LANGUAGE:
            raise UnsupportedLanguage(
                f"pocketsphinx (offline speech-to-text) only speaks {SUPPORTED_LANGUAGE}, not {language!r}: "
                "use listening.provider transcribe for this agent"
            )
        if vocabulary is not None:
            logger.debug("pocketsphinx ignores the custom vocabulary", extra={"vocabulary": vocabulary})
        decoder = await asyncio.to_thread(_POOL.take)  # a failure here is the engine's to log and count
        return PocketsphinxSpeechSession(decoder, asyncio.get_running_loop(), str(next(self._sessions)))
