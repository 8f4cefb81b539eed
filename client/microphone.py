"""The microphone as an aiortc audio track (sounddevice), 48 kHz mono in 20-ms frames."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame

from server.full_level import full_level_frame

from .echo_client import ClientError

RATE = 48000
FRAME = 960  # 20 ms


class MicrophoneTrack(MediaStreamTrack):
    """Captures the default input device; ClientError `no_microphone` when there is none.

    While `muted()` is true the track sends silence (half duplex with a loudspeaker).
    """

    kind = "audio"

    def __init__(self, muted: Callable[[], bool] | None = None) -> None:
        super().__init__()
        self._muted = muted
        try:
            import sounddevice as sd
        except (ImportError, OSError) as exc:
            raise ClientError(
                "no_microphone", f"the microphone needs sounddevice and PortAudio: {exc}"
            ) from None
        self._queue: asyncio.Queue[np.ndarray] = asyncio.Queue(maxsize=50)
        loop = asyncio.get_running_loop()

        def on_audio(data: Any, frames: int, time: Any, status: Any) -> None:
            block = np.asarray(data[:, 0] * 32767, dtype=np.int16).copy()
            loop.call_soon_threadsafe(self._offer, block)

        try:
            self._stream = sd.InputStream(samplerate=RATE, channels=1, blocksize=FRAME, callback=on_audio)
            self._stream.start()
        except Exception as exc:
            raise ClientError("no_microphone", f"no usable microphone: {exc}") from None
        self._pts = 0

    def _offer(self, block: np.ndarray) -> None:
        if self._queue.full():
            self._queue.get_nowait()  # drop the oldest: stay live
        self._queue.put_nowait(block)

    async def recv(self) -> AudioFrame:
        block = await self._queue.get()
        if self._muted is not None and self._muted():
            block = np.zeros_like(block)
        frame = full_level_frame(block, RATE, self._pts)  # a mono frame would be sent 3 dB quieter
        self._pts += len(block)
        return frame

    def stop(self) -> None:
        super().stop()
        self._stream.stop()
