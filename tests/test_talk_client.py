"""`echo-client stream --mic --talk` without a sound card: clear refusals, no session left behind."""

from __future__ import annotations

import pytest

from client.cli import main
from client.echo_client import ClientError
from client.playback import SpeakerSink

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
