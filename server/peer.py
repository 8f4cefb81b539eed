"""A session's WebRTC peer connection: create it, answer an SDP offer, add trickled candidates."""

from __future__ import annotations

import re

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from .config import IceServer
from .errors import ServiceError
from .live import LiveSession
from .rtc_latency import low_latency_audio

#: An offer must carry at least one audio or video section (aiortc accepts an SDP without any).
MEDIA_LINE = re.compile(r"^m=(audio|video) ", re.MULTILINE)


def peer_connection(ice_servers: list[IceServer]) -> RTCPeerConnection:
    """A new peer connection using the configured STUN/TURN servers (host candidates without)."""
    servers = [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential) for s in ice_servers]
    return RTCPeerConnection(RTCConfiguration(iceServers=servers) if servers else None)


async def answer_sdp(live: LiveSession, offer_sdp: str) -> str:
    """Apply a client's SDP offer and return the answer (ServiceError `bad_sdp` on a malformed offer)."""
    if not MEDIA_LINE.search(offer_sdp):
        raise ServiceError("bad_sdp", "the SDP offer has no audio or video m-line")
    try:
        await live.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        low_latency_audio(live.pc)
        live.offer_answer_track()
        await live.pc.setLocalDescription(await live.pc.createAnswer())
    except Exception as exc:  # aiortc raises ValueError and friends on bad SDP
        raise ServiceError("bad_sdp", f"cannot use this SDP offer: {str(exc)[:200]}") from None
    return str(live.pc.localDescription.sdp)


async def add_candidate(
    live: LiveSession, candidate: str, sdp_mid: str | None, index: int | None, limit: int
) -> None:
    """Add a trickled ICE candidate (`candidate:…` line) to the session's peer connection.

    An empty candidate (or `a=end-of-candidates`) ends the remote candidates, so ICE fails
    instead of waiting; past `limit` candidates per session, `too_many_candidates`.
    """
    line = candidate.removeprefix("a=").removeprefix("candidate:")
    if not line.strip() or line.strip() == "end-of-candidates":
        await live.pc.addIceCandidate(None)
        return
    if live.candidates >= limit:
        raise ServiceError(
            "too_many_candidates",
            f"this session already added {live.candidates} ICE candidates (limit {limit})",
        )
    try:
        ice = candidate_from_sdp(line)
    except Exception:
        raise ServiceError("bad_candidate", f"cannot parse ICE candidate {candidate[:80]!r}") from None
    # Without a mid or index the candidate belongs to the first m-line (the BUNDLE group).
    ice.sdpMid, ice.sdpMLineIndex = sdp_mid, index if index is not None or sdp_mid is not None else 0
    live.candidates += 1
    try:
        await live.pc.addIceCandidate(ice)
    except (ValueError, OSError) as exc:
        raise ServiceError("bad_candidate", f"cannot use ICE candidate {candidate[:80]!r}: {exc}") from None
