// A channel's live stream, kept whole across dropped connections.
//
// Each connection asks for a fresh single-use ticket (the key stays out of URLs) and
// resumes with `after_seq` = the last stored event it has. Events already seen are dropped
// by `seq`; a gap (which the server should never leave) is mended by reconnecting from the
// last good `seq`. So the page shows every stored event exactly once, however the
// connection comes and goes. Knows nothing about the DOM: it calls `onFrame` and `onState`.

import { api } from "./api.js";

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10_000;

// Why the server closed the stream, by code (README, "Close codes"); its reason text is
// only for people. 1001 (restart), 1008 (a refused ticket) and 1011 are reconnected: the
// next ticket request says whether the channel or the key is gone.
const CLOSED = {
  TOO_BIG: 1009,
  KEY_REVOKED: 4403,
  DELETED: 4410,
};

export class ChannelStream {
  /// `onFrame(frame)` gets hello, delta and every stored event once, in `seq` order;
  /// `onState({state, detail, retryInMs})` gets connecting | live | retrying | done |
  /// deleted | closed.
  constructor(channelId, { onFrame, onState }) {
    this.channelId = channelId;
    this.onFrame = onFrame;
    this.onState = onState;
    this.lastSeq = 0;
    this.socket = null;
    this.retryMs = RETRY_MIN_MS;
    this.timer = null;
    this.stopped = false;
    this.connect();
  }

  /// Closes for good (the view is going away).
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, "the viewer left");
  }

  async connect() {
    if (this.stopped) return;
    this.onState({ state: "connecting" });
    let ticket;
    try {
      ticket = await api.post(`/channels/${this.channelId}/websocket_tickets`);
    } catch (error) {
      if (error.status === 404 || error.status === 401 || error.status === 403) {
        this.finish("closed", error.message);
      } else {
        this.retry(error.message);
      }
      return;
    }
    if (this.stopped) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/api/v1/channels/${this.channelId}/stream?after_seq=${this.lastSeq}&ticket=${encodeURIComponent(ticket.value)}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onmessage = (message) => this.receive(socket, message.data);
    socket.onclose = (event) => this.closed(socket, event);
  }

  receive(socket, data) {
    if (socket !== this.socket) return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.type === "hello") {
      this.retryMs = RETRY_MIN_MS;
      this.onState({ state: "live" });
    }
    if (typeof frame.seq === "number") {
      if (frame.seq <= this.lastSeq) return;
      if (frame.seq !== this.lastSeq + 1) {
        // Start again from what we have rather than show a hole.
        socket.close(4000, "gap");
        return;
      }
      this.lastSeq = frame.seq;
    }
    this.onFrame(frame);
    // The summary is a channel's last event: nothing more will come.
    if (frame.type === "summary") {
      this.finish("done");
    }
  }

  closed(socket, event) {
    if (socket !== this.socket) return;
    this.socket = null;
    if (this.stopped) return;
    switch (event.code) {
      case CLOSED.DELETED:
        this.finish("deleted", "the collaboration was deleted");
        break;
      case CLOSED.KEY_REVOKED:
        this.finish("closed", "the API key was revoked");
        break;
      case CLOSED.TOO_BIG:
        this.finish("closed", "a message was larger than the server takes");
        break;
      default:
        // A drop, a restart (1001), a refused ticket (1008) or a gap: resume from lastSeq.
        this.retry(event.reason || "the connection dropped");
    }
  }

  retry(detail) {
    if (this.stopped) return;
    const wait = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    this.onState({ state: "retrying", detail, retryInMs: wait });
    this.timer = setTimeout(() => this.connect(), wait * (0.75 + Math.random() / 2));
  }

  finish(state, detail) {
    this.stopped = true;
    clearTimeout(this.timer);
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000, "done");
    this.onState({ state, detail });
  }
}
