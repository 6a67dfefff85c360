"""Text-to-speech offline with eSpeak NG, for the demo and the tests.

espeakng-loader ships libespeak-ng and its data; this drives the library through ctypes. The library is one
process-wide synthesizer with global state (voice, rate, the audio callback) and is not thread-safe, so it is
initialized once, every use holds one lock, and synthesis runs on one worker thread of the process. It is
initialized in synchronous mode: `espeak_Synth` returns when the text is spoken, calling back with each
buffer of 22050 Hz PCM16 as it is produced. Each buffer is resampled to 8 kHz (a soxr stream per request, so
buffers join without clicks) and handed to the loop at once: audio streams per synthesis buffer (about
65 ms of speech), not per sentence. Closing the generator (barge-in) makes the next callback abort the
synthesis. eSpeak is fast (measured: first chunk under 1 ms, a sentence at about 1/700 of real time), so
none of this waits long; it is still kept off the event loop.

The voice is the agent's `voice.id` when `voice.provider` is "espeak" (an eSpeak voice name: "en-us",
"en-us+f2", "fr"). An agent with a Polly voice (Joanna, Matthew...) speaks with its language's default
eSpeak voice instead: the language code itself ("en-US" -> "en-us"), or its primary subtag ("de-DE" ->
"de") where eSpeak has no regional voice. The speaking rate is per instance (eSpeak's default 175 words a
minute; 140 is what pocketsphinx understands best over a phone line, of the rates measured).
"""

import asyncio
import contextlib
import ctypes
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Final

import espeakng_loader
import numpy as np
import soxr

from streaming.audio.codec import SAMPLE_RATE
from switchboard.agent import Voice

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS: Final = 2
_INITIALIZE_DONT_EXIT: Final = 0x8000  # report missing data as an error instead of exiting the process
_POS_CHARACTER: Final = 1
_CHARS_UTF8: Final = 1
_EE_OK: Final = 0
_RATE: Final = 1  # espeakRATE, in words per minute
DEFAULT_WORDS_PER_MINUTE: Final = 175  # eSpeak's own default
# The synthesis callback's buffer length; eSpeak rounds it to its own block size (60 ms measured).
_BUFFER_MS: Final = 20
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(RuntimeError):
    """libespeak-ng could not be loaded, or failed to speak."""


class UnknownVoice(EspeakError, ValueError):
    """eSpeak has no voice by that name."""


class _Library:
    """libespeak-ng, initialized once per process. Every method takes the lock: eSpeak is one global
    synthesizer."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,  # text
            ctypes.c_size_t,  # size
            ctypes.c_uint,  # position
            ctypes.c_int,  # position_type
            ctypes.c_uint,  # end_position
            ctypes.c_uint,  # flags
            ctypes.c_void_p,  # unique_identifier
            ctypes.c_void_p,  # user_data
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        self._lib = lib
        self.lock = threading.Lock()
        data = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EspeakError(f"libespeak-ng did not initialize (data at {data.decode()})")
        self.sample_rate: int = rate
        # The sink of the synthesis in progress; the callback (kept referenced: ctypes does not) calls it.
        self._sink: Callable[[bytes], bool] | None = None
        self._failure: Exception | None = None  # what the sink raised during the synthesis in progress
        self._callback = _SynthCallback(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)
        self._voice = b""

    def _on_audio(self, wav: "ctypes._Pointer[ctypes.c_short]", samples: int, _events: int | None) -> int:
        """eSpeak's callback: 0 to go on, 1 to abort the synthesis."""
        sink = self._sink
        if samples <= 0 or not wav or sink is None:
            return 0
        try:
            return 0 if sink(ctypes.string_at(wav, samples * 2)) else 1
        except Exception as error:  # ctypes would print and drop it: keep it for speak() to raise
            self._failure = error
            return 1

    def _select(self, name: str) -> None:
        encoded = name.encode()
        if encoded != self._voice:
            self._voice = b""  # whatever a failed selection left selected, choose again next time
            if self._lib.espeak_SetVoiceByName(encoded) != _EE_OK:
                raise UnknownVoice(f"eSpeak NG has no voice {name!r}")
            self._voice = encoded

    def has_voice(self, name: str) -> bool:
        with self.lock:
            try:
                self._select(name)
            except UnknownVoice:
                return False
            return True

    def speak(self, text: str, voice: str, words_per_minute: int, sink: Callable[[bytes], bool]) -> None:
        """Speak `text` with `voice`, handing each buffer of native-rate PCM16 to `sink` as eSpeak makes it;
        `sink` returns False to abort."""
        encoded = text.encode()
        with self.lock:
            self._select(voice)
            if self._lib.espeak_SetParameter(_RATE, words_per_minute, 0) != _EE_OK:
                raise EspeakError(f"eSpeak NG refused a rate of {words_per_minute} words per minute")
            self._sink, self._failure = sink, None
            try:
                error = self._lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            finally:
                self._sink = None
            failure, self._failure = self._failure, None
        if failure is not None:
            raise failure
        if error != _EE_OK:
            raise EspeakError(f"espeak_Synth failed with error {error}")


@cache
def _library() -> _Library:
    return _Library()


@cache
def _worker() -> ThreadPoolExecutor:
    """The thread every synthesis runs on: requests queue here (eSpeak speaks one at a time anyway) rather
    than park threads of the loop's default pool on the library's lock."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")


def espeak_voice_name(voice: Voice, language: str) -> str:
    """The eSpeak voice an agent speaks with (see the module docstring); UnknownVoice if eSpeak has none."""
    library = _library()
    own = voice.provider == "espeak"
    candidates = [voice.id] if own else [language.lower(), language.split("-")[0].lower()]
    for name in candidates:
        if library.has_voice(name):
            return name
    if own:
        raise UnknownVoice(f"eSpeak NG has no voice {voice.id!r} (voice.id of an espeak voice)")
    raise UnknownVoice(f"eSpeak NG has no voice for the language {language!r} (to stand in for {voice.id!r})")


def speak_8khz(
    text: str, voice: str, *, words_per_minute: int = DEFAULT_WORDS_PER_MINUTE, sink: Callable[[bytes], bool]
) -> None:
    """Speak `text` with the eSpeak voice named `voice`, handing PCM16 8 kHz to `sink` as it is made (blocking:
    call it on a worker thread). `sink` returns False to abort the synthesis."""
    library = _library()
    resampler = soxr.ResampleStream(library.sample_rate, SAMPLE_RATE, 1, dtype="int16")
    going = True

    def resampled(native: bytes) -> bool:
        nonlocal going
        pcm = resampler.resample_chunk(np.frombuffer(native, dtype="<i2"))
        going = sink(pcm.astype("<i2", copy=False).tobytes()) if pcm.size else True
        return going

    library.speak(text, voice, words_per_minute, resampled)
    if going:
        rest = resampler.resample_chunk(np.zeros(0, dtype="<i2"), last=True)
        if rest.size:
            sink(rest.astype("<i2", copy=False).tobytes())


def speech_8khz(text: str, voice: str, *, words_per_minute: int = DEFAULT_WORDS_PER_MINUTE) -> bytes:
    """All of `text` spoken by the eSpeak voice named `voice`, as PCM16 8 kHz (blocking). A synthesized
    caller for the simulator, where pocketsphinx has to hear real speech."""
    parts: list[bytes] = []

    def keep(pcm: bytes) -> bool:
        parts.append(pcm)
        return True

    speak_8khz(text, voice, words_per_minute=words_per_minute, sink=keep)
    return b"".join(parts)


class EspeakTextToSpeech:
    """TextToSpeech offline. Cheap to build (per call or per process): the library and its thread are the
    process's."""

    def __init__(self, *, words_per_minute: int = DEFAULT_WORDS_PER_MINUTE) -> None:
        if not 80 <= words_per_minute <= 450:  # eSpeak's range
            raise ValueError(f"words_per_minute must be within 80-450, got {words_per_minute}")
        self._words_per_minute = words_per_minute
        self._voices: dict[tuple[str, str, str], str] = {}

    async def voice_name(self, voice: Voice, language: str) -> str:
        """The eSpeak voice for an agent: call it at start to fail early on a voice eSpeak lacks."""
        key = (voice.provider, voice.id, language)
        name = self._voices.get(key)
        if name is None:
            loop = asyncio.get_running_loop()
            name = await loop.run_in_executor(_worker(), espeak_voice_name, voice, language)
            self._voices[key] = name
        return name

    async def aclose(self) -> None:
        """At service stop: let the syntheses already asked for finish, and end eSpeak's thread (a later
        request starts a new one)."""
        executor = _worker()
        _worker.cache_clear()
        await asyncio.to_thread(executor.shutdown, wait=True)

    async def synthesize(self, text: str, *, voice: Voice, language: str) -> AsyncGenerator[bytes]:
        if not text.strip():
            return
        name = await self.voice_name(voice, language)
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        abandoned = threading.Event()

        def deliver(item: bytes | BaseException | None) -> None:
            # RuntimeError: the loop has closed, nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(chunks.put_nowait, item)

        def sink(pcm: bytes) -> bool:
            if abandoned.is_set():
                return False
            deliver(pcm)
            return True

        def work() -> None:
            try:
                speak_8khz(text, name, words_per_minute=self._words_per_minute, sink=sink)
                deliver(None)
            except Exception as error:
                deliver(error)

        loop.run_in_executor(_worker(), work)
        try:
            while (item := await chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise item  # the engine logs and counts it
                yield item
        finally:
            # The worker sees this at eSpeak's next callback and aborts; nothing to wait for here.
            abandoned.set()
