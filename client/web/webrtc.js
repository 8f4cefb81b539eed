// The browser's media: the camera and microphone (getUserMedia) and the peer connection that
// streams them to the session, receives Echo's spoken answers, and trickles ICE both ways.

/** Sound as the world sounds: no noise suppression or gain control (they would bend the tones
 * and noise bursts the assistant is asked about). Echo cancellation is on: it removes only what
 * the page itself plays, so Echo does not hear its own spoken answers from the speakers (they
 * would start a new question, or interrupt the answer they belong to). */
const AUDIO = { echoCancellation: true, noiseSuppression: false, autoGainControl: false };

/**
 * @typedef {{stream: MediaStream, missing: "audio" | "video" | null, micDenied: boolean}} Media
 *   `micDenied`: the microphone is blocked for this site while the camera is not
 */

/** Permission state ("granted", "denied", "prompt") of a device, or "" where the browser cannot tell. */
async function permission(name) {
  try {
    return (await navigator.permissions.query({ name })).state;
  } catch {
    return "";
  }
}

/**
 * Camera and microphone, or whichever one exists or is allowed.
 * Rejects with the DOMException of the camera+microphone request when neither can start.
 * @param {MediaDevices | undefined} devices
 * @returns {Promise<Media>}
 */
export async function openMedia(devices = navigator.mediaDevices) {
  if (!devices || !devices.getUserMedia) {
    throw new DOMException("getUserMedia needs a secure context", "SecurityError");
  }
  try {
    return { stream: await devices.getUserMedia({ video: true, audio: AUDIO }), missing: null, micDenied: false };
  } catch (err) {
    if (err.name === "NotAllowedError") {
      // a blocked microphone alone still leaves the camera (and typed questions); a refused
      // prompt is not asked again
      if ((await permission("microphone")) !== "denied" || (await permission("camera")) === "denied") throw err;
      return { stream: await devices.getUserMedia({ video: true }), missing: "audio", micDenied: true };
    }
    if (err.name !== "NotFoundError" && err.name !== "OverconstrainedError") throw err;
    // one of the two devices is missing: stream the other (the protocol takes either alone)
    for (const [constraints, missing] of [
      [{ video: true }, "audio"],
      [{ audio: AUDIO }, "video"],
    ]) {
      try {
        return { stream: await devices.getUserMedia(constraints), missing, micDenied: false };
      } catch {
        // try the next one
      }
    }
    throw err;
  }
}

/** One peer connection: the media stream goes to the server; with a microphone, the audio
 * transceiver is send-receive so the server's spoken answers come back on it. */
export class MediaLink {
  /**
   * @param {MediaStream} stream
   * @param {{iceServers?: RTCIceServer[], onCandidate: (c: object) => void, onState?: (s: string) => void,
   *   onTrack?: (track: MediaStreamTrack) => void}} options  `onTrack`: a track from the server
   */
  constructor(stream, { iceServers = [], onCandidate, onState = () => {}, onTrack = () => {} }) {
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
      const direction = track.kind === "audio" ? "sendrecv" : "sendonly";
      this.pc.addTransceiver(track, { direction, streams: [stream] });
    }
    this.pc.addEventListener("track", ({ track }) => onTrack(track));
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
