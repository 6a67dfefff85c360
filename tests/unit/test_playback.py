"""The playback ledger: what goes out in which order, what the caller heard, cutting and resuming."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streaming.playback import (
    BYTES_PER_MS,
    CLEAR,
    Clip,
    ClipKind,
    Outbound,
    Playback,
    SendClear,
    SendMark,
    heard_part,
)


def audio(ms: int, value: int = 0x7F) -> bytes:
    return bytes([value]) * (ms * BYTES_PER_MS)


def drain(playback: Playback) -> list[Outbound]:
    """What the sender takes from the outbox."""
    items = list(playback.outbox)
    playback.outbox.clear()
    return items


def shape(items: list[Outbound]) -> list[str | int]:
    """Audio as its length in ms, marks by name, clears as CLEAR."""
    return [
        len(item) // BYTES_PER_MS if isinstance(item, bytes) else item.name if isinstance(item, SendMark) else "CLEAR"
        for item in items
    ]


def say(playback: Playback, turn: int, text: str, ms: int, *, first: bool = False, at: int = 0) -> Clip:
    clip = playback.open_clip(turn=turn, index=len(playback.clips), kind=ClipKind.SPEECH, text=text, first=first)
    playback.append(clip, audio(ms), at)
    playback.close(clip, at)
    return clip


def test_the_first_audio_goes_out_as_a_frame_and_a_mark_then_marks_after_each_clip() -> None:
    first_audio: list[int] = []
    playback = Playback(on_first_audio=first_audio.append)
    say(playback, 2, "Sure, we open at nine,", 500, first=True)
    say(playback, 2, "Monday to Friday.", 700)
    assert shape(drain(playback)) == [20, "t2:1:first", 480, "t2:2:end", 700, "t2:3:end"]
    assert first_audio == [2]
    assert playback.audible
    assert not playback.drained


def test_audio_streams_out_as_it_is_appended() -> None:
    playback = Playback()
    clip = playback.open_clip(turn=0, index=0, kind=ClipKind.SPEECH, text="Hello there.", first=True)
    playback.append(clip, audio(10), 0)
    assert shape(drain(playback)) == [10]
    playback.append(clip, audio(100), 5)
    assert shape(drain(playback)) == [10, "t0:1:first", 90]
    playback.close(clip, 10)
    assert shape(drain(playback)) == ["t0:2:end"]


def test_a_clip_shorter_than_a_frame_carries_both_marks_at_its_end() -> None:
    playback = Playback()
    say(playback, 0, "Hi.", 10, first=True)
    assert shape(drain(playback)) == [10, "t0:1:first", "t0:2:end"]


def test_large_audio_is_split_into_sends_of_at_most_a_second() -> None:
    playback = Playback()
    say(playback, 0, "A long greeting.", 2500)
    assert shape(drain(playback)) == [1000, 1000, 500, "t0:1:end"]


def test_clips_play_in_order() -> None:
    playback = Playback()
    clip = playback.open_clip(turn=0, index=0, kind=ClipKind.SPEECH, text="one")
    with pytest.raises(RuntimeError, match="still open"):
        playback.open_clip(turn=0, index=1, kind=ClipKind.SPEECH, text="two")
    playback.close(clip, 0)
    with pytest.raises(RuntimeError, match="open clip"):
        playback.append(clip, audio(20), 0)


def test_held_audio_goes_out_on_release() -> None:
    notified: list[int] = []
    playback = Playback(notify=lambda: notified.append(1))
    playback.hold()
    say(playback, 3, "We open at nine.", 600, first=True)
    assert drain(playback) == []
    assert notified == []
    assert not playback.audible
    playback.release(1000)
    assert shape(drain(playback)) == [20, "t3:1:first", 580, "t3:2:end"]
    assert notified


def test_echoes_confirm_playout_until_drained() -> None:
    playback = Playback()
    say(playback, 0, "Hello.", 400, first=True, at=0)
    names = [item.name for item in drain(playback) if isinstance(item, SendMark)]
    first = playback.mark_echoed(names[0], 20)
    assert first is not None
    assert first.first
    assert not first.drained
    last = playback.mark_echoed(names[1], 400)
    assert last is not None
    assert last.drained
    assert not last.first
    assert playback.drained
    assert not playback.audible
    assert playback.mark_echoed("t0:9:end", 500) is None  # not ours


def test_a_missing_echo_is_taken_as_played_by_the_next_one() -> None:
    playback = Playback()
    say(playback, 0, "one", 100)
    say(playback, 0, "two", 100)
    names = [item.name for item in drain(playback) if isinstance(item, SendMark)]
    echo = playback.mark_echoed(names[1], 200)
    assert echo is not None
    assert echo.drained


def test_played_position_follows_sends_and_echoes() -> None:
    playback = Playback()
    say(playback, 0, "one", 1000, at=0)
    assert playback.played_position(0) == 0
    assert playback.played_position(250) == 250 * BYTES_PER_MS
    assert playback.played_position(5000) == 1000 * BYTES_PER_MS
    # Audio sent while nothing played starts when it arrives, not when the last ended.
    say(playback, 0, "two", 500, at=3000)
    assert playback.played_position(3100) == 1100 * BYTES_PER_MS
    assert playback.unplayed_ms(3100) == 400


def test_an_echo_later_than_expected_moves_the_estimate() -> None:
    playback = Playback()
    say(playback, 0, "one", 500, at=0)
    say(playback, 0, "two", 500, at=0)
    names = [item.name for item in drain(playback) if isinstance(item, SendMark)]
    playback.mark_echoed(names[0], 800)  # Twilio was 300 ms behind our estimate
    assert playback.played_position(900) == 600 * BYTES_PER_MS


def test_a_cut_clears_twilio_and_keeps_whole_words_heard() -> None:
    playback = Playback()
    clip = say(playback, 4, "one two three four five six seven eight nine ten", 1000, first=True, at=0)
    sent = drain(playback)
    position = playback.cut(450)
    assert position == 450 * BYTES_PER_MS
    assert playback.outbox[-1] is CLEAR
    assert playback.held
    assert not playback.audible
    assert playback.cut_position == position
    assert heard_part(clip, position) == "one two three four"
    assert playback.heard_text([clip]) == "one two three four"
    # Twilio echoes the pending marks on the clear: flushed, not played.
    for item in sent:
        if isinstance(item, SendMark):
            assert playback.mark_echoed(item.name, 460) is None


def test_a_cut_drops_unsent_audio_but_not_marks() -> None:
    playback = Playback()
    say(playback, 0, "one", 300, first=True, at=0)
    playback.cut(100)
    items = list(playback.outbox)
    assert not any(isinstance(item, bytes) for item in items)
    assert isinstance(items[-1], SendClear)
    assert [item.name for item in items if isinstance(item, SendMark)] == ["t0:1:first", "t0:2:end"]


def test_a_cut_with_nothing_playing_sends_no_clear() -> None:
    playback = Playback()
    playback.hold()
    say(playback, 1, "held", 300)
    assert playback.cut(100) == 0
    assert drain(playback) == []


def test_resume_replays_from_just_before_the_cut_under_new_mark_numbers() -> None:
    playback = Playback(resume_rewind_ms=100)
    say(playback, 2, "one two three four", 1000, first=True, at=0)
    say(playback, 2, "five six", 500, at=0)
    drain(playback)
    playback.cut(600)
    drain(playback)
    # Still being appended while the caller was heard out: kept back.
    say(playback, 2, "seven", 300, at=700)
    assert drain(playback) == []
    playback.resume(900)
    replay = drain(playback)
    assert shape(replay) == [500, "t2:4:end", 500, "t2:5:end", 300, "t2:6:end"]
    total = sum(len(item) for item in replay if isinstance(item, bytes))
    assert total == (1800 - 500) * BYTES_PER_MS
    for name in ("t2:4:end", "t2:5:end"):
        assert playback.mark_echoed(name, 2000) is not None
    last = playback.mark_echoed("t2:6:end", 2500)
    assert last is not None
    assert last.drained


def test_resume_never_rewinds_past_a_confirmed_mark() -> None:
    playback = Playback(resume_rewind_ms=500)
    say(playback, 0, "one", 300, at=0)
    say(playback, 0, "two", 300, at=0)
    names = [item.name for item in drain(playback) if isinstance(item, SendMark)]
    playback.mark_echoed(names[0], 300)
    playback.cut(350)
    drain(playback)
    playback.resume(400)
    assert shape(drain(playback)) == [300, "t0:3:end"]


def test_a_turn_never_sent_can_be_discarded() -> None:
    playback = Playback()
    playback.hold()
    say(playback, 5, "speculative", 400, first=True)
    playback.discard_unsent(5)
    assert playback.clips == []
    assert playback.length == 0
    playback.release(0)
    assert drain(playback) == []
    assert playback.drained


def test_sent_audio_cannot_be_discarded() -> None:
    playback = Playback()
    say(playback, 5, "heard", 400)
    with pytest.raises(RuntimeError, match="cannot be discarded"):
        playback.discard_unsent(5)


def test_fillers_are_heard_but_not_said() -> None:
    playback = Playback()
    filler = playback.open_clip(turn=2, index=-1, kind=ClipKind.FILLER, text="One moment.")
    playback.append(filler, audio(600), 0)
    playback.close(filler, 0)
    speech = say(playback, 2, "We open at nine.", 800, first=True, at=0)
    assert shape(drain(playback)) == [600, "t2:1:filler", 20, "t2:2:first", 780, "t2:3:end"]
    assert playback.heard_text([filler, speech], 1400 * BYTES_PER_MS) == "We open at nine."
    assert heard_part(filler, 10_000) == ""


def test_a_clip_still_streaming_is_cut_by_its_texts_length() -> None:
    clip = Clip(turn=0, index=0, kind=ClipKind.SPEECH, text="one two three four", start=0, first=False)
    clip.length = 200 * BYTES_PER_MS  # the TTS is still sending; the text says ~1.2 s
    assert heard_part(clip, 150 * BYTES_PER_MS) == ""
    assert heard_part(clip, 700 * BYTES_PER_MS) == "one two"
    clip.complete = True
    assert heard_part(clip, 200 * BYTES_PER_MS) == "one two three four"


def test_reset_forgets_the_turn_and_ignores_its_late_echoes() -> None:
    playback = Playback()
    say(playback, 1, "one", 300, at=0)
    names = [item.name for item in drain(playback) if isinstance(item, SendMark)]
    playback.reset()
    assert playback.drained
    assert playback.clips == []
    assert playback.mark_echoed(names[0], 1000) is None


_NUMBERED = re.compile(r"t(\d+):(\d+):(first|end|filler)$")


@given(
    clips=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=3),
    rewind=st.integers(min_value=0, max_value=300),
)
def test_after_any_cuts_and_resumes_all_audio_plays_and_mark_numbers_only_go_up(
    clips: list[int], cuts: list[int], rewind: int
) -> None:
    """The ear is a model of Twilio: it plays audio in order, drops it on a clear."""
    playback = Playback(resume_rewind_ms=rewind)
    for index, ms in enumerate(clips):
        say(playback, 7, f"clip {index}", ms, first=index == 0)
    total = sum(clips) * BYTES_PER_MS
    wire: list[Outbound] = []
    heard_until = 0  # the furthest position known played
    now = 0
    for cut_at in sorted(cuts):
        now = max(now, cut_at)
        wire += drain(playback)
        position = playback.cut(now)
        heard_until = max(heard_until, position)
        wire += drain(playback)
        now += 50
        playback.resume(now)
    wire += drain(playback)
    numbers = [int(m.group(2)) for item in wire if isinstance(item, SendMark) and (m := _NUMBERED.match(item.name))]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == len(numbers)
    # After the last resume, what goes out runs from at or before the last cut to the very end.
    sent_after_last_clear = b"".join(
        item
        for item in wire[max((i for i, x in enumerate(wire) if x is CLEAR), default=-1) + 1 :]
        if isinstance(item, bytes)
    )
    assert len(sent_after_last_clear) >= total - heard_until
    assert all(isinstance(item, bytes | SendMark | SendClear) for item in wire)
