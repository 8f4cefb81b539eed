"""`echo-client stream --mic --talk` without a sound card: clear refusals before any session,
and the half-duplex gate that mutes the microphone while an answer plays."""

from __future__ import annotations

import numpy as np
import pytest

from client.cli import main
from client.echo_client import ClientError
from client.playback import FRAME, EchoGate, SpeakerSink

pytestmark = pytest.mark.unit


def has_output_device() -> bool:
    try:
        import sounddevice as sd

        return bool(sd.query_devices(kind="output"))
    except Exception:  # no PortAudio, or PortAudio without an output device
        return False


def test_talk_needs_the_microphone() -> None:
    with pytest.raises(SystemExit) as info:
        main(["stream", "clip.webm", "--talk"])
    assert info.value.code == 2


def test_talk_without_a_speaker_says_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    if has_output_device():
        pytest.skip("this machine has an audio output device")
    with pytest.raises(ClientError) as info:
        SpeakerSink()
    assert info.value.code == "no_speaker" and "--talk" in info.value.message
    # refused before any connection: the server address is never dialled
    assert main(["--server", "http://127.0.0.1:9", "stream", "--mic", "--talk"]) == 1
    err = capsys.readouterr().err
    assert "no_speaker" in err and "server_unreachable" not in err


def test_echo_gate_mutes_the_microphone_while_the_answer_plays_and_a_tail_after() -> None:
    gate = EchoGate(tail_s=0.3)
    silence, speech = np.zeros(FRAME, dtype=np.int16), np.full(FRAME, 3000, dtype=np.int16)
    gate.heard(silence, arrived=10.0, queued_s=0.0)
    assert not gate.muted(10.0)  # silence between answers keeps the microphone open
    gate.heard(speech, arrived=10.0, queued_s=0.5)  # plays from 10.5 s to 10.52 s
    assert gate.muted(10.0) and gate.muted(10.8)
    assert gate.muted(10.81) and not gate.muted(10.83)  # 0.5 s queued + 20 ms + 0.3 s tail
    gate.heard(speech, arrived=10.1, queued_s=0.0)  # an earlier end never shortens the mute
    assert gate.muted(10.8)
