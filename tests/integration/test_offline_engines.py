"""The offline engines for real: eSpeak NG speaks, the audio crosses a phone line (μ-law), pocketsphinx hears it.

Nothing is simulated here: libespeak-ng from espeakng-loader, pocketsphinx with the model its wheel ships.
"""

import asyncio
import re
import statistics
import threading

import numpy as np
import pytest

from streaming.audio.codec import FRAME_BYTES_PCM, SAMPLE_RATE, pcm16_to_ulaw, ulaw_to_pcm16
from streaming.providers.base import Transcript
from streaming.providers.espeak import EspeakTextToSpeech, UnknownVoice, espeak_voice_name, speech_8khz
from streaming.providers.pocketsphinx import PocketsphinxSpeechToText, UnsupportedLanguage
from switchboard.agent import Voice

SENTENCE = "I would like to book an appointment on Tuesday morning."
# The eSpeak voice and rate pocketsphinx heard best over a phone line, of the en-us voices measured (13 voice
# variants at 140, 160 and 175 words per minute, four sentences of a booking call).
VOICE = Voice(provider="espeak", id="en-us+f2")
WORDS_PER_MINUTE = 140
# Word overlap: the share of the sentence's words found in pocketsphinx's finals. pocketsphinx's 16 kHz model
# hears phone-band eSpeak poorly, and eSpeak is not bit-for-bit repeatable (its voice has random jitter), so
# one round trip varies: over 30 runs of this test's (LEAD_MS of silence, the sentence, TAIL_MS), min 0.2,
# 10th percentile 0.3, median 0.4. It is sensitive to the silence around the speech too, which the
# endpointer's lead-in puts into the utterance's cepstral mean: with 300 ms before, median 0.35 and min 0.1.
# The median of ROUNDS runs is steady (under 0.3 only if 3 of 5 runs are, about 1 in 2500 from those
# figures), and a path that stopped hearing stays under it (the model's own wideband CMN prior in place
# of pocketsphinx.NARROWBAND_CMN: median 0.0 over 12 runs).
MIN_MEDIAN_OVERLAP = 0.3
ROUNDS = 5
LEAD_MS = 200
TAIL_MS = 500
_WORD = re.compile(r"[a-z0-9']+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _overlap(said: str, heard: str) -> float:
    return len(_words(said) & _words(heard)) / len(_words(said))


async def _spoken(text: str, tts: EspeakTextToSpeech | None = None) -> list[bytes]:
    tts = tts or EspeakTextToSpeech(words_per_minute=WORDS_PER_MINUTE)
    return [chunk async for chunk in tts.synthesize(text, voice=VOICE, language="en-US")]


async def _heard(pcm16: bytes, *, close_early: bool = False) -> list[Transcript]:
    """`pcm16` through a phone line and a pocketsphinx session, fed in 20 ms frames; every transcript."""
    line = ulaw_to_pcm16(pcm16_to_ulaw(pcm16))
    session = await PocketsphinxSpeechToText().start(language="en-US")
    results: list[Transcript] = []

    async def read() -> None:
        async for transcript in session.transcripts():
            results.append(transcript)

    reader = asyncio.create_task(read())
    for offset in range(0, len(line), FRAME_BYTES_PCM):
        await session.send_audio(line[offset : offset + FRAME_BYTES_PCM])
    await session.aclose()
    await reader
    return results


def _silence(ms: int) -> bytes:
    return bytes(ms * SAMPLE_RATE // 1000 * 2)


async def test_espeak_speaks_8khz_audio_in_chunks_as_it_is_made() -> None:
    chunks = await _spoken(SENTENCE)
    assert len(chunks) > 5  # streamed per synthesis buffer, not one piece per sentence
    assert all(len(chunk) % 2 == 0 for chunk in chunks)
    samples = np.frombuffer(b"".join(chunks), dtype="<i2")
    # Ten words at 140 words per minute: about 4.3 s at 8 kHz. The same samples read as 22050 Hz (not
    # resampled) would be 2.7 times longer, and a 16 kHz output twice as long.
    seconds = samples.size / SAMPLE_RATE
    assert 2.5 < seconds < 6.0
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    assert rms > 1000  # speech, not near-silence
    # 8 kHz speech from a 22 kHz synthesizer: the resampler kept what a phone line carries, under 4 kHz,
    # and the waveform is not aliased noise: most of its energy sits in the speech band under 1 kHz.
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
    frequencies = np.fft.rfftfreq(samples.size, 1 / SAMPLE_RATE)
    assert spectrum[frequencies < 1000].sum() > 0.5 * spectrum.sum()


async def test_a_faster_rate_speaks_the_same_text_in_less_time() -> None:
    slow = sum(len(chunk) for chunk in await _spoken(SENTENCE, EspeakTextToSpeech(words_per_minute=120)))
    fast = sum(len(chunk) for chunk in await _spoken(SENTENCE, EspeakTextToSpeech(words_per_minute=240)))
    assert 0.4 < fast / slow < 0.7


async def test_a_polly_voice_speaks_with_the_languages_default_espeak_voice() -> None:
    assert espeak_voice_name(Voice(id="Joanna"), "en-US") == "en-us"
    assert espeak_voice_name(Voice(id="Vicki"), "de-DE") == "de"  # no regional German voice: the language's
    tts = EspeakTextToSpeech()
    audio = [chunk async for chunk in tts.synthesize("Hello there.", voice=Voice(id="Joanna"), language="en-US")]
    assert sum(len(chunk) for chunk in audio) > SAMPLE_RATE // 2  # half a second of speech at least


async def test_an_unknown_espeak_voice_is_a_clear_error() -> None:
    tts = EspeakTextToSpeech()
    with pytest.raises(UnknownVoice, match="no voice 'no-such-voice'"):
        await tts.voice_name(Voice(provider="espeak", id="no-such-voice"), "en-US")
    with pytest.raises(UnknownVoice, match="no voice for the language 'xx-YY'"):
        _ = [chunk async for chunk in tts.synthesize("Hello.", voice=Voice(id="Joanna"), language="xx-YY")]


async def test_closing_a_synthesis_early_frees_espeak_for_the_next_one() -> None:
    tts = EspeakTextToSpeech(words_per_minute=WORDS_PER_MINUTE)
    stream = tts.synthesize(SENTENCE * 5, voice=VOICE, language="en-US")
    first = await anext(stream)
    assert first
    await stream.aclose()  # barge-in
    whole = b"".join(await _spoken("Thank you.", tts))
    assert 0.3 < len(whole) / 2 / SAMPLE_RATE < 2.0


async def test_pocketsphinx_hears_what_espeak_said_over_a_phone_line() -> None:
    overlaps = []
    for _ in range(ROUNDS):
        speech = b"".join(await _spoken(SENTENCE))
        results = await _heard(_silence(LEAD_MS) + speech + _silence(TAIL_MS))
        finals = [result for result in results if result.is_final]
        partials = [result for result in results if not result.is_final]
        assert finals, "no final transcript"
        overlaps.append(_overlap(SENTENCE, " ".join(final.text for final in finals)))
        # Partials come while the caller speaks, before their segment's final, and promise nothing stable.
        assert partials
        assert results.index(partials[0]) < results.index(finals[0])
        assert partials[0].segment_id == finals[0].segment_id
        assert all(partial.stable_text == "" for partial in partials)
        assert all(final.stable_text == final.text for final in finals)
        # Times are this session's audio ms: speech starts after the silence (the endpointer keeps a lead-in
        # of its window) and ends before the audio does.
        speech_end_ms = LEAD_MS + len(speech) * 1000 // 2 // SAMPLE_RATE
        assert 0 <= finals[0].start_ms <= LEAD_MS
        assert finals[0].start_ms < finals[-1].end_ms <= speech_end_ms + TAIL_MS
    assert statistics.median(overlaps) >= MIN_MEDIAN_OVERLAP, overlaps


async def test_closing_mid_utterance_still_gives_its_final() -> None:
    speech = b"".join(await _spoken(SENTENCE))
    results = await _heard(_silence(LEAD_MS) + speech)  # no trailing silence: the endpointer never heard the end
    finals = [result for result in results if result.is_final]
    assert len(finals) >= 1
    assert finals[-1].text


async def test_silence_gives_no_transcripts() -> None:
    assert await _heard(_silence(2000)) == []


async def test_closing_the_tts_ends_its_thread_and_a_new_one_still_speaks() -> None:
    tts = EspeakTextToSpeech(words_per_minute=WORDS_PER_MINUTE)
    assert await _spoken("One moment.", tts)
    await tts.aclose()
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("espeak")]
    assert await _spoken("One moment.", EspeakTextToSpeech())


def test_a_synthesized_caller_line_is_pcm_at_8khz() -> None:
    pcm = speech_8khz("Yes, that works for me.", "en-us+f2", words_per_minute=WORDS_PER_MINUTE)
    assert len(pcm) % 2 == 0
    assert 1.0 < len(pcm) / 2 / SAMPLE_RATE < 4.0


async def test_pocketsphinx_speaks_only_us_english() -> None:
    stt = PocketsphinxSpeechToText()
    with pytest.raises(UnsupportedLanguage, match="only speaks en-US, not 'fr-FR'"):
        await stt.start(language="fr-FR")
    session = await stt.start(language="en-US", vocabulary="clinic-terms")  # a Transcribe vocabulary: ignored
    await session.aclose()
