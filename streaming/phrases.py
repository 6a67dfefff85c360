"""Fixed phrases (greeting, fillers, reprompt, goodbye, apology) synthesized once and played at once.

A greeting synthesized when the call connects would keep the caller waiting for TTS; from the cache it
starts with the first frame. `PhraseCache` is the call's view: it warms the agent's phrases while the call
is set up, and synthesizes a missing one on demand (one request per phrase however many ask). The audio
lives in a `PhraseStore` shared by every call of the process, so after the first call a phrase costs
nothing. It is kept as μ-law, the form it is sent in: half the memory of PCM and no encoding per call.
"""

import asyncio
from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

from streaming.audio.codec import pcm16_to_ulaw
from streaming.providers.base import TextToSpeech
from switchboard.agent import Voice
from switchboard.observability import logger

# Said when a provider fails in the middle of a turn: the call goes on, the caller is asked again.
APOLOGY: Final = "Sorry, I had a problem on my side. Could you say that again?"

PhraseKey = tuple[str, str, str, str, str]


class PhraseStore:
    """Process-wide LRU of phrase audio (μ-law), keyed by TTS implementation, voice, language and text.

    Keyed by the TTS class rather than the instance: providers may be built per call, and the same engine
    and voice say the same text the same way.
    """

    def __init__(self, max_entries: int = 512) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
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


class PhraseCache:
    """One call's phrases for one voice: `cached(text)` without waiting, `get(text)` synthesizing if needed."""

    def __init__(self, tts: TextToSpeech, *, voice: Voice, language: str, store: PhraseStore | None = None) -> None:
        self._tts = tts
        self._voice = voice
        self._language = language
        self._store = store if store is not None else PhraseStore()
        self._engine = f"{type(tts).__module__}.{type(tts).__qualname__}"
        self._pending: dict[str, asyncio.Task[bytes]] = {}

    def _key(self, text: str) -> PhraseKey:
        return (self._engine, self._voice.id, self._voice.engine, self._language, text)

    def cached(self, text: str) -> bytes | None:
        return self._store.get(self._key(text))

    async def get(self, text: str) -> bytes:
        """The phrase's μ-law audio. Raises what the TTS raised when it cannot be synthesized."""
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
        """Synthesize every phrase not cached yet, concurrently; returns how many failed (logged)."""
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
        pcm = bytearray()
        stream = self._tts.synthesize(text, voice=self._voice, language=self._language)
        try:
            async for piece in stream:
                pcm += piece
        finally:
            closing = getattr(stream, "aclose", None)
            if closing is not None:
                await closing()
        if len(pcm) % 2:
            del pcm[-1]
        audio = pcm16_to_ulaw(bytes(pcm))
        self._store.put(self._key(text), audio)
        return audio
