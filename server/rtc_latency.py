"""Audio frames out of aiortc's receiver as soon as they are complete, not 80 ms later.

aiortc's `RTCRtpReceiver` gives every audio receiver a jitter buffer that holds a frame until
four later frames have arrived (prefetch 4), a cushion meant for playback. With 20 ms Opus
frames that is 80 ms added to every packet before the session (turn detection, the encoders)
or the client's answer player sees it. A listener that needs no cushion, because it classifies
speech or plays through an output device that buffers on its own, only needs the next frame
to know a frame is complete: prefetch 1, 20 ms. Lost or late packets are handled as before
(the buffer waits for a missing packet until its 16 slots are full, then skips it).

aiortc (1.9 to 1.16) offers no setting for this; `low_latency_audio` replaces the receiver's
buffer before any packet arrives, and says so in the log when a future aiortc has moved it.
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc.jitterbuffer import JitterBuffer

log = logging.getLogger(__name__)

#: Frames the audio jitter buffer waits for after a frame before releasing it (aiortc's own: 4).
AUDIO_PREFETCH = 1
#: Slots of the audio jitter buffer (aiortc's own; 320 ms of 20 ms frames).
AUDIO_CAPACITY = 16
#: The receiver's private attribute holding its jitter buffer (aiortc's name mangling).
BUFFER_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"


def low_latency_audio(pc: Any) -> int:
    """Give every audio receiver of peer connection `pc` a prefetch-1 jitter buffer; how many it changed.

    Call it once the transceivers exist (after `setRemoteDescription` of an offer, or after
    adding tracks to an offer) and before media flows.
    """
    changed = 0
    for transceiver in pc.getTransceivers():
        if transceiver.kind != "audio":
            continue
        receiver = transceiver.receiver
        current = getattr(receiver, BUFFER_ATTRIBUTE, None)
        if not isinstance(current, JitterBuffer):
            log.warning("aiortc keeps no audio jitter buffer where expected; audio keeps its 80 ms delay")
            continue
        setattr(receiver, BUFFER_ATTRIBUTE, JitterBuffer(capacity=AUDIO_CAPACITY, prefetch=AUDIO_PREFETCH))
        changed += 1
    return changed
