// The browser's media: the camera and microphone (getUserMedia) and the send-only
// RTCPeerConnection that streams them to the session, with trickle ICE both ways.

/** Raw sound, as the world sounds: no echo cancellation, noise suppression or gain control
 * (they would bend tones and noise bursts the assistant is asked about). */
const AUDIO = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };

/**
 * Camera and microphone, or whichever one exists.
 * Rejects with the DOMException of the camera+microphone request when neither can start.
 * @param {MediaDevices | undefined} devices
 * @returns {Promise<{stream: MediaStream, missing: "audio" | "video" | null}>}
 */
export async function openMedia(devices = navigator.mediaDevices) {
  if (!devices || !devices.getUserMedia) {
    throw new DOMException("getUserMedia needs a secure context", "SecurityError");
  }
  try {
    return { stream: await devices.getUserMedia({ video: true, audio: AUDIO }), missing: null };
  } catch (err) {
    if (err.name !== "NotFoundError" && err.name !== "OverconstrainedError") throw err;
    // one of the two devices is missing: stream the other (the protocol takes either alone)
    for (const [constraints, missing] of [
      [{ video: true }, "audio"],
      [{ audio: AUDIO }, "video"],
    ]) {
      try {
        return { stream: await devices.getUserMedia(constraints), missing };
      } catch {
        // try the next one
      }
    }
    throw err;
  }
}

/** One send-only peer connection carrying a media stream to the server. */
export class MediaLink {
  /**
   * @param {MediaStream} stream
   * @param {{iceServers?: RTCIceServer[], onCandidate: (c: object) => void, onState?: (s: string) => void}} options
   */
  constructor(stream, { iceServers = [], onCandidate, onState = () => {} }) {
    this.pc = new RTCPeerConnection({ iceServers });
    this.onCandidate = onCandidate;
    this.trickling = false;
    /** @type {object[]} local candidates found before the offer went out */
    this.outbox = [];
    /** @type {RTCIceCandidateInit[]} remote candidates that came before the answer */
    this.inbox = [];
    for (const track of stream.getTracks()) {
      // keep resolution rather than frame rate under load: the sieve reads fine detail
      if (track.kind === "video" && "contentHint" in track) track.contentHint = "detail";
      this.pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    }
    this.pc.addEventListener("icecandidate", ({ candidate }) => {
      if (!candidate || !candidate.candidate) return; // end of candidates
      const wire = {
        candidate: candidate.candidate,
        sdp_mid: candidate.sdpMid ?? undefined,
        sdp_mline_index: candidate.sdpMLineIndex ?? undefined,
      };
      if (this.trickling) this.onCandidate(wire);
      else this.outbox.push(wire);
    });
    this.pc.addEventListener("connectionstatechange", () => onState(this.pc.connectionState));
  }

  /** @returns {string} new, connecting, connected, disconnected, failed or closed */
  get state() {
    return this.pc.connectionState;
  }

  /** True while the link can still carry media (not failed or closed). */
  get usable() {
    return !["failed", "closed"].includes(this.pc.connectionState);
  }

  /**
   * Whether the link reaches "connected" within `timeoutMs` (false once it fails or closes).
   * @param {number} timeoutMs
   * @returns {Promise<boolean>}
   */
  whenConnected(timeoutMs) {
    return new Promise((resolve) => {
      const finish = (ok) => {
        window.clearTimeout(timer);
        this.pc.removeEventListener("connectionstatechange", check);
        resolve(ok);
      };
      const check = () => {
        const s = this.pc.connectionState;
        if (s === "connected") finish(true);
        else if (s === "failed" || s === "closed") finish(false);
      };
      const timer = window.setTimeout(() => finish(false), timeoutMs);
      this.pc.addEventListener("connectionstatechange", check);
      check();
    });
  }

  /** @returns {Promise<string>} the SDP offer (set as the local description). */
  async createOffer() {
    await this.pc.setLocalDescription(await this.pc.createOffer());
    return this.pc.localDescription.sdp;
  }

  /** Send the candidates found so far, and every later one as it comes (call once the offer is sent). */
  startTrickle() {
    this.trickling = true;
    for (const wire of this.outbox.splice(0)) this.onCandidate(wire);
  }

  /** @param {string} sdp the server's answer */
  async acceptAnswer(sdp) {
    await this.pc.setRemoteDescription({ type: "answer", sdp });
    for (const c of this.inbox.splice(0)) await this.pc.addIceCandidate(c);
  }

  /** @param {{candidate: string, sdp_mid?: string, sdp_mline_index?: number}} event */
  async addRemoteCandidate(event) {
    const init = { candidate: event.candidate, sdpMid: event.sdp_mid, sdpMLineIndex: event.sdp_mline_index };
    if (this.pc.remoteDescription) await this.pc.addIceCandidate(init);
    else this.inbox.push(init);
  }

  close() {
    this.pc.close();
  }
}
