// The account's collaborations changing, from GET /api/v1/events (Server-Sent Events).
//
// Read with fetch rather than EventSource so that the key travels in the Authorization
// header, as with every other request. After a break the stream is opened again, after the
// server's `retry`, with the last event id seen as Last-Event-ID: the server then sends
// exactly what was missed (or `reset` when that is too old, and the caller reloads).

import { getKey } from "./api.js";

/// Calls `handle({event, id, data})` for each event until the returned function is called.
export function followEvents(handle) {
  let lastId = null;
  let retry = 2000;
  let stopped = false;
  let controller = null;
  let timer = null;

  function dispatch(block) {
    let event = "message";
    let id = null;
    const data = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "event") event = value;
      else if (name === "id") id = value;
      else if (name === "data") data.push(value);
      else if (name === "retry" && /^\d+$/.test(value)) retry = Number(value);
    }
    if (id !== null) lastId = id;
    if (data.length === 0) return;
    let parsed;
    try {
      parsed = JSON.parse(data.join("\n"));
    } catch {
      return;
    }
    handle({ event, id, data: parsed });
  }

  async function connect() {
    controller = new AbortController();
    const headers = { Authorization: `Bearer ${getKey()}` };
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    try {
      const response = await fetch("/api/v1/events", { headers, signal: controller.signal, cache: "no-store" });
      if (response.status === 401) {
        window.dispatchEvent(new CustomEvent("skein:unauthorized", { detail: "The API key no longer works." }));
        return;
      }
      if (response.ok && response.body) {
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n?/g, "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            dispatch(block);
          }
        }
      }
    } catch {
      // Aborted, or the connection broke: either way, come back below unless stopped.
    }
    if (!stopped) timer = setTimeout(connect, retry * (0.75 + Math.random() / 2));
  }

  connect();
  return () => {
    stopped = true;
    clearTimeout(timer);
    controller?.abort();
  };
}
