"""Spoken answers without a peer: sentence cutting, and the answer track's frames and events."""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction

import numpy as np
import pytest
from aiortc.codecs.opus import OpusDecoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError

from echo_core.tts import Voice, VoiceCatalog
from server import answer_track
from server.answer_track import FRAME_SAMPLES, SAMPLE_RATE, AnswerAudioTrack, Playback, silent_payload
from server.protocol import ResponseAudioDone, ResponseAudioStarted, ServerEvent
from server.spoken_answer import SentenceSplitter, SpokenAnswer, split_sentences

pytestmark = pytest.mark.unit


def test_sentences_are_cut_at_ends_followed_by_space_and_at_newlines() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("It was red. Then") == ["It was red."]
    assert splitter.feed(" blue!") == []  # the end is known only when white space follows
    assert splitter.feed(" Pi is 3.14 or so?\nYes") == ["Then blue!", "Pi is 3.14 or so?"]
    assert splitter.feed("\n\n") == ["Yes"]
    assert splitter.flush() == ""
    assert splitter.feed("red") == [] and splitter.flush() == "red"  # echo-tiny: all at the end
    assert split_sentences("One. Two...  Three") == ["One.", "Two...", "Three"]
    assert split_sentences("  ") == []


def resolved(samples: np.ndarray) -> asyncio.Future[np.ndarray]:
    future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
    future.set_result(samples)
    return future


class Events:
    """What a playback reports, in order (None: it ended)."""

    def __init__(self) -> None:
        self.items: list[ServerEvent | None] = []

    def __call__(self, event: ServerEvent | None) -> None:
        self.items.append(event)


@pytest.mark.asyncio
async def test_track_plays_answers_in_order_then_silence_and_reports_them() -> None:
    track = AnswerAudioTrack()
    first, second = Events(), Events()
    a = Playback("a", lambda: False, first)
    b = Playback("b", lambda: False, second)
    assert track.enqueue(a) and track.enqueue(b)
    assert not np.any(track._next_samples())  # nothing synthesised yet: silence, nothing started
    assert first.items == []
    a.add(resolved(np.full(1500, 7, dtype=np.int16)))  # 1.5625 frames
    frame = track._next_samples()
    assert np.all(frame == 7) and first.items == [ResponseAudioStarted(response_id="a")]
    pending: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
    a.add(pending)
    frame = track._next_samples()  # the rest of the first segment, then an underrun: silence
    assert np.all(frame[:540] == 7) and not np.any(frame[540:])
    pending.set_result(np.full(100, 9, dtype=np.int16))
    a.end()
    b.add(resolved(np.full(FRAME_SAMPLES, 5, dtype=np.int16)))
    b.end()
    frame = track._next_samples()  # a's last 100 samples, then b begins in the same frame
    assert np.all(frame[:100] == 9) and np.all(frame[100:] == 5)
    done = ResponseAudioDone(
        response_id="a", duration_ms=round(1600 * 1000 / SAMPLE_RATE), status="completed"
    )
    assert first.items[1:] == [done, None]
    frame = track._next_samples()
    assert np.all(frame[:100] == 5) and not np.any(frame[100:])
    assert second.items == [
        ResponseAudioStarted(response_id="b"),
        ResponseAudioDone(response_id="b", duration_ms=20, status="completed"),
        None,
    ]
    assert not track._queue and not np.any(track._next_samples())


@pytest.mark.asyncio
async def test_a_cancelled_answer_stops_at_the_next_frame_and_the_queue_is_bounded() -> None:
    track = AnswerAudioTrack(max_pending=2)
    cancel = False
    events = Events()
    a = Playback("a", lambda: cancel, events)
    assert track.enqueue(a)
    a.add(resolved(np.full(10 * FRAME_SAMPLES, 3, dtype=np.int16)))
    a.end()
    assert np.all(track._next_samples() == 3)
    cancel = True  # the answer's job was cancelled
    assert not np.any(track._next_samples())
    assert events.items[1:] == [ResponseAudioDone(response_id="a", duration_ms=20, status="cancelled"), None]
    quiet = Events()
    b, c, d = (Playback(r, lambda: False, quiet) for r in "bcd")
    assert track.enqueue(b) and track.enqueue(c) and not track.enqueue(d) and track.refused == 1
    track.stop_speaking()  # barge-in: every queued answer ends; those that never spoke say nothing
    assert not np.any(track._next_samples()) and quiet.items == [None, None] and not track._queue


@pytest.mark.asyncio
async def test_track_sends_paced_opus_packets_speech_encoded_and_silence_as_opus_silence() -> None:
    track = AnswerAudioTrack()
    events = Events()
    playback = Playback("a", lambda: False, events)
    tone = (8000 * np.sin(np.arange(2 * FRAME_SAMPLES) * 2 * np.pi * 440 / SAMPLE_RATE)).astype(np.int16)
    playback.add(resolved(tone))
    playback.end()
    track.enqueue(playback)
    packets = [await track.recv() for _ in range(4)]  # two frames of speech, then idle
    assert [p.pts for p in packets] == [0, FRAME_SAMPLES, 2 * FRAME_SAMPLES, 3 * FRAME_SAMPLES]
    assert all(p.time_base == Fraction(1, SAMPLE_RATE) for p in packets)
    assert bytes(packets[2]) == bytes(packets[3]) == silent_payload() and len(silent_payload()) <= 8
    decoder = OpusDecoder()  # what a receiving peer does with them
    decoded = [
        decoder.decode(JitterFrame(data=bytes(p), timestamp=int(p.pts)))[0].to_ndarray() for p in packets
    ]
    assert all(d.size == 2 * FRAME_SAMPLES for d in decoded)  # 20 ms of 48-kHz stereo
    assert np.abs(decoded[1]).max() > 2000  # the tone came through the codec
    assert np.abs(decoded[3]).max() < 50
    assert isinstance(events.items[0], ResponseAudioStarted)
    track.stop()
    assert events.items[-1] is None
    with pytest.raises(MediaStreamError):
        await track.recv()


@pytest.mark.asyncio
async def test_an_idle_track_sends_sparse_silence_on_the_wall_clock_and_wakes_for_an_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(answer_track, "HANGOVER_FRAMES", 2)
    monkeypatch.setattr(answer_track, "IDLE_EVERY_FRAMES", 20)
    track = AnswerAudioTrack()
    first = Playback("a", lambda: False, Events())
    first.add(resolved(np.full(FRAME_SAMPLES, 3000, dtype=np.int16)))
    first.end()
    track.enqueue(first)
    packets, arrivals = [], []
    for k in range(5):  # speech, 2 frames of hangover, then one silent packet per 20 frames
        if k == 4:  # the event loop stalls across the next idle packet's time: it leaves late,
            asyncio.get_running_loop().call_later(0.35, time.sleep, 0.1)  # at its own pts
        packets.append(await track.recv())
        arrivals.append(time.monotonic())
    frames = [int(p.pts) // FRAME_SAMPLES for p in packets]
    assert frames == [0, 1, 2, 22, 42]
    assert all(bytes(p) == silent_payload() for p in packets[1:]) and bytes(packets[0]) != silent_payload()
    for frame, arrived in zip(frames, arrivals, strict=True):  # pts is the frame's place on the wall clock
        assert abs(arrived - arrivals[0] - frame * answer_track.FRAME_S) < 0.1
    # an answer queued while the track idles is sent at once, not at the next idle packet (frame 62)
    pending = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.1)
    assert not pending.done()
    second = Playback("b", lambda: False, Events())
    second.add(resolved(np.full(FRAME_SAMPLES, 3000, dtype=np.int16)))
    second.end()
    queued = time.monotonic()
    track.enqueue(second)
    packet = await pending
    assert time.monotonic() - queued < 0.2 and bytes(packet) != silent_payload()
    frame = int(packet.pts) // FRAME_SAMPLES
    assert 42 < frame < 62 and abs(queued - arrivals[0] - frame * answer_track.FRAME_S) < 0.1
    assert [bytes(await track.recv()) for _ in range(2)] == [silent_payload()] * 2  # hangover
    waiting = asyncio.ensure_future(track.recv())  # idle until frame + 22
    await asyncio.sleep(0.1)
    assert not waiting.done()
    track.stop()  # the waiting track ends at once
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(waiting, 0.1)


def test_voice_catalog_knows_languages_and_variants_in_any_case() -> None:
    catalog = VoiceCatalog(frozenset({"en-us", "en-gb"}), frozenset({"f3", "alex"}))
    assert catalog.knows("en-us") and catalog.knows("EN-GB+F3") and catalog.knows("en-us+Alex")
    assert not catalog.knows("de") and not catalog.knows("en-us+f9") and not catalog.knows("+f3")
    assert not VoiceCatalog().knows("en-us")


@pytest.mark.asyncio
async def test_an_answer_cancelled_before_it_spoke_ends_at_once_and_frees_its_slot() -> None:
    track = AnswerAudioTrack(max_pending=1)  # never pulled: no peer has connected
    speech = SpokenAnswer("a", Voice(), track, None, lambda: True)
    assert not track.enqueue(Playback("b", lambda: False, Events()))
    speech.finish()  # the cancelled text ended with nothing said
    assert speech.playback.finished and speech.events.get_nowait() is None and speech.events.empty()
    assert track.enqueue(Playback("c", lambda: False, Events()))
