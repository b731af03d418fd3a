// `#/c/{id}`: one collaboration's channel, live. The summary sits on top once it has
// ended; below it the transcript, with a model's text streaming in while it is typed.

import { allAgents, api, blobUrl } from "./api.js";
import { address, clearErrors, confirmAction, duration, END_REASONS, failure, field, h, kindBadge, put, showErrors, statusBadge, time, toast } from "./ui.js";
import { ChannelStream } from "./stream.js";

/// How close to the bottom (px) still counts as "following along".
const FOLLOW_SLACK = 80;

export function channelView(main, id) {
  let collaboration = null;
  let stream = null;
  let stopped = false;
  let connection = { state: "connecting" };
  let messages = 0;
  /// Tokens and dollars the messages seen so far cost (a live ticker while it runs).
  const spent = { tokens: 0, cost: 0 };
  /// The channel's last `seq` when this connection opened: frames up to it are replayed.
  let replayUntil = 0;
  const typing = new Map();
  /// Turns whose message is in: a late repeat of their `turn` frame is old news.
  const spoken = new Set();
  /// Tool calls shown, by call id: their result fills them in.
  const calls = new Map();

  const title = h("h1", { class: "objective" }, "Loading…");
  const badge = h("span");
  const stateLine = h("p", { class: "state-line", role: "status" });
  const forkedFrom = h("p", { class: "forked-from muted" });
  /// Where a team's run came from (its team; the collaboration that delegated to it), and
  /// the runs of teams this collaboration delegated to.
  const lineage = h("div", { class: "lineage muted" });
  let lineageFor = "";
  const buttons = h("div", { class: "actions" });
  const summary = h("section", { class: "summary card", "aria-label": "Summary", hidden: true });
  const summaryText = h("div");
  // Its own element, changed only when the URL does: a re-render must not stop playback.
  const podcast = h("div", { class: "podcast", hidden: true });
  summary.append(summaryText, podcast);
  const roster = h("ul", { class: "roster" });
  const transcript = h("ol", { class: "transcript", "aria-label": "Transcript" });
  // Filters of what the transcript shows: one speaker's lines, lines with some text.
  const bySpeaker = h("select", { id: "filter-speaker", "aria-label": "Show the lines of" }, h("option", { value: "" }, "Everyone"));
  const byText = h("input", { type: "search", id: "filter-text", placeholder: "Search the transcript", "aria-label": "Search the transcript", autocomplete: "off" });
  const filterCount = h("span", { class: "muted filter-count", "aria-live": "polite" });
  const filters = h("div", { class: "transcript-filters" }, bySpeaker, byText, filterCount);
  /// Whether `node` (a transcript entry) passes the filters: events pass only unfiltered.
  const shows = (node) => {
    const speaker = bySpeaker.value;
    const needle = byText.value.trim().toLowerCase();
    if (!speaker && !needle) return true;
    if (speaker && node.dataset.sender !== speaker) return false;
    return !needle || node.textContent.toLowerCase().includes(needle);
  };
  function applyFilters() {
    let shown = 0;
    for (const node of transcript.children) {
      node.hidden = !shows(node);
      if (!node.hidden) shown++;
    }
    const filtering = bySpeaker.value || byText.value.trim();
    filterCount.textContent = filtering ? `${shown} of ${transcript.children.length} shown` : "";
  }
  bySpeaker.addEventListener("change", applyFilters);
  byText.addEventListener("input", applyFilters);
  const jump = h("button", { type: "button", class: "jump primary", hidden: true, onclick: () => scrollToEnd() }, "↓ New messages");
  const composer = h("form", { class: "composer card", hidden: true, "aria-label": "Speak in this channel" });
  /// The turn in progress, from the last `turn` frame: whose it is.
  let turn = null;
  main.append(
    h("div", { class: "page-head" }, h("div", {}, h("a", { href: "#/", class: "back" }, "← Collaborations"), title), buttons),
    h("div", { class: "state" }, badge, stateLine),
    forkedFrom,
    lineage,
    summary,
    h("details", { class: "card roster-card" }, h("summary", {}, "Agents in this channel, and what each has done so far"), roster),
    filters,
    transcript,
    composer,
    jump,
  );

  const following = () => window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - FOLLOW_SLACK;
  function scrollToEnd() {
    window.scrollTo({ top: document.documentElement.scrollHeight });
    jump.hidden = true;
  }
  const onScroll = () => {
    if (following()) jump.hidden = true;
  };
  window.addEventListener("scroll", onScroll, { passive: true });

  /// Adds content at the bottom (above any turn still in progress), keeping the reader at
  /// the bottom only if they were there. History replayed on connecting is no news: it
  /// offers no "new messages" jump.
  function append(node, replacing, replayed = false) {
    const follow = following();
    const pending = transcript.querySelector(".typing");
    node.hidden = !shows(node);
    if (replacing) replacing.replaceWith(node);
    else if (pending && !node.classList.contains("typing")) pending.before(node);
    else transcript.append(node);
    if (follow) scrollToEnd();
    else if (!replayed) jump.hidden = false;
  }

  function renderHeader() {
    const c = collaboration;
    title.textContent = c.objective;
    put(badge, statusBadge(c.status));
    put(buttons,
      c.status === "running" && h("button", { type: "button", onclick: stop }, "Stop"),
      h("button", { type: "button", class: "save-transcript", onclick: () => downloadTranscript("markdown"), title: "Download the whole record as Markdown" }, "Transcript"),
      h("button", { type: "button", class: "save-json", onclick: () => downloadTranscript("json"), title: "Download the whole record as JSON" }, "JSON"),
      h("button", { type: "button", class: "danger", onclick: remove }, "Delete"),
    );
    put(forkedFrom, c.forked_from && ["Forked from ", h("a", { href: `#/c/${c.forked_from.collaboration_id}` }, "another collaboration"), ` at #${c.forked_from.at_seq}.`]);
    if (lineageFor !== `${c.id}:${c.status}`) {
      lineageFor = `${c.id}:${c.status}`;
      renderLineage(c);
    }
    const members = [c.principal, ...c.participants];
    if (bySpeaker.options.length !== members.length + 1) {
      const chosen = bySpeaker.value;
      put(bySpeaker, h("option", { value: "" }, "Everyone"),
        members.map((agent) => h("option", { value: agent.id, selected: agent.id === chosen }, agent.name)));
    }
    put(roster, [c.principal, ...c.participants].map((agent, i) =>
      h("li", {}, h("span", { class: "name" }, agent.name), " ", kindBadge(agent.kind), i === 0 ? h("span", { class: "muted" }, " principal") : "", " ", address(agent.address),
        h("span", { class: "so-far", dataset: { agent: agent.id } }))));
    renderSoFar();
    renderState();
    renderSummary();
    renderComposer();
  }

  /// The team that ran this, the collaboration that delegated to it, and the runs of the
  /// teams it delegated to (theirs carry its id as their `context_id`).
  async function renderLineage(c) {
    const parts = [];
    if (c.team_id) parts.push(h("p", {}, "A run of a team · ", h("a", { href: `#/?team=${c.team_id}` }, "its other runs")));
    const [parent, children] = await Promise.all([
      c.context_id ? api.get(`/collaborations/${c.context_id}`).catch(() => null) : null,
      api.get(`/collaborations?context_id=${c.id}&size=50`).catch(() => null),
    ]);
    if (parent) parts.push(h("p", {}, "Delegated by ", h("a", { href: `#/c/${parent.id}` }, parent.objective)));
    if (children?.items.length) {
      parts.push(h("p", {}, `Delegated to teams (${children.meta.total}):`),
        h("ul", { class: "delegated" }, children.items.map((run) =>
          h("li", {}, statusBadge(run.status), " ", h("a", { href: `#/c/${run.id}` }, run.headline || run.objective)))));
    }
    put(lineage, parts);
  }

  /// The box people type in: for collaborations with human participants, while running.
  function renderComposer() {
    const c = collaboration;
    const humans = [c.principal, ...c.participants].filter((agent) => agent.kind === "human");
    if (c.status !== "running" || humans.length === 0) {
      composer.hidden = true;
      main.classList.remove("has-composer");
      return;
    }
    main.classList.add("has-composer");
    if (!composer.hidden && composer.dataset.for === c.id) {
      renderTurnHint();
      return;
    }
    composer.dataset.for = c.id;
    const as = h("select", { name: "sender", id: "composer-sender" },
      humans.map((human) => h("option", { value: human.id }, human.name)));
    const text = h("textarea", { name: "content", id: "composer-content", rows: 2,
      placeholder: "Say something (Enter sends, Shift+Enter starts a new line)", "aria-describedby": "composer-hint composer-error" });
    const error = h("p", { class: "field-error", id: "composer-error", role: "alert", hidden: true });
    put(composer,
      h("div", { class: "composer-row" },
        humans.length > 1 ? h("label", { for: "composer-sender" }, "Speak as ", as) : h("span", { class: "name" }, humans[0].name),
        h("p", { class: "hint", id: "composer-hint", "aria-live": "polite" })),
      text,
      error,
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Send")));
    text.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        composer.requestSubmit();
      }
    });
    composer.onsubmit = async (event) => {
      event.preventDefault();
      error.hidden = true;
      const sender = humans.length > 1 ? as.value : humans[0].id;
      try {
        await api.post(`/channels/${c.channel_id}/messages`, { sender, content: text.value });
        text.value = "";
      } catch (failure) {
        const fields = failure.fieldErrors || [];
        error.textContent = fields.length ? fields.map((f) => f.message).join(" ") : failure.message;
        error.hidden = false;
      }
      text.focus();
    };
    composer.hidden = false;
    renderTurnHint();
  }

  function renderTurnHint() {
    const hint = composer.querySelector(".hint");
    if (!hint) return;
    const c = collaboration;
    if (turn?.sender.kind === "human") hint.textContent = `It is ${turn.sender.name}'s turn.`;
    else if (c.allow_interjections) hint.textContent = "You may speak at any time.";
    else hint.textContent = "You may speak when it is your turn.";
    composer.classList.toggle("your-turn", turn?.sender.kind === "human");
  }

  function renderState() {
    const c = collaboration;
    if (!c) return;
    let text;
    if (c.status === "running") {
      const count = Math.max(messages, c.message_count);
      text = `Running: ${count} of ${c.message_cap} messages.`;
      // What it has cost so far: the stored figure, or the messages' own if they add up to
      // more (the judge's and the selector's calls show in the figure when it is read again).
      const tokens = Math.max(spent.tokens, c.tokens_used);
      if (tokens > 0) text += ` ${tokens.toLocaleString()} tokens, $${Math.max(spent.cost, c.cost_usd).toFixed(4)} so far.`;
      if (connection.state === "live") text += " Live.";
      else if (connection.state === "retrying") text += ` Connection lost; reconnecting in ${Math.ceil(connection.retryInMs / 1000)} s…`;
      else if (connection.state === "connecting") text += " Connecting…";
      else if (connection.state === "closed") text += ` Not connected: ${connection.detail}.`;
    } else {
      text = `Ended${c.end_reason ? ` because ${END_REASONS[c.end_reason] || c.end_reason}` : ""}${c.ended_at ? ` at ${new Date(c.ended_at).toLocaleTimeString()}` : ""}.`;
      if (!c.summary && connection.state !== "closed") text += " Writing the summary…";
    }
    stateLine.textContent = text;
    stateLine.dataset.connection = connection.state;
  }

  /// Each member's turns, tokens, cost and median time per turn, from the messages as
  /// they come: the roster shows them while it runs (the summary's table, once it ends).
  const soFar = new Map();
  function renderSoFar() {
    for (const span of roster.querySelectorAll(".so-far")) {
      const member = soFar.get(span.dataset.agent);
      if (!member) {
        span.textContent = " · no turns yet";
        continue;
      }
      const sorted = [...member.ms].sort((a, b) => a - b);
      const median = sorted.length ? ` · ${(sorted[Math.floor(sorted.length / 2)] / 1000).toFixed(1)} s a turn` : "";
      span.textContent = ` · ${member.turns} turn${member.turns === 1 ? "" : "s"} · ${member.tokens.toLocaleString()} tokens · $${member.cost.toFixed(4)}${median}`;
    }
  }

  const figuresNode = h("div", { class: "figures" });
  function renderSummary() {
    const c = collaboration;
    if (c.status === "running" || !c.summary) {
      summary.hidden = true;
      return;
    }
    if (c.audio_url && podcast.dataset.url !== c.audio_url) {
      podcast.dataset.url = c.audio_url;
      put(podcast, h("button", { type: "button", onclick: (event) => listen(event.currentTarget, c.audio_url) }, "▶ Listen to the podcast"));
      podcast.hidden = false;
    }
    const facts = [
      ["Ended", `${c.status}${c.end_reason ? `: ${END_REASONS[c.end_reason] || c.end_reason}` : ""}`],
      ["Messages", `${c.message_count} of ${c.message_cap}`],
      ["Tokens used", c.tokens_used.toLocaleString()],
      ["Cost", `$${c.cost_usd.toFixed(4)}${c.cost_budget_usd ? ` of $${c.cost_budget_usd}` : ""}`],
      ["Duration", duration(c.started_at, c.ended_at)],
    ];
    put(summaryText,
      h("h2", { class: "headline" }, c.headline || "Summary"),
      h("p", { class: "summary-text" }, c.summary),
      c.advisory_message && h("p", { class: "notice advisory" }, c.advisory_message),
      c.error_message && h("p", { class: "notice error" }, c.error_message),
      outcomeNode(c.outcome),
      h("dl", { class: "facts" }, facts.map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value)))),
      figuresNode,
    );
    summary.hidden = false;
    loadFigures();
  }

  /// Who did what: each member's turns, tokens and time per turn, once it has ended.
  async function loadFigures() {
    if (figuresNode.dataset.for === id) return;
    figuresNode.dataset.for = id;
    try {
      const { members } = await api.get(`/collaborations/${id}/figures`);
      const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;
      put(figuresNode, h("table", {},
        h("caption", {}, "Who did what"),
        h("thead", {}, h("tr", {}, ["Member", "Turns", "Tokens", "Cost", "Time per turn (median, 95th)", "Retries (failed turns)", "Tool calls (failed)"].map((label) => h("th", { scope: "col" }, label)))),
        h("tbody", {}, members.map((member) => h("tr", {},
          h("th", { scope: "row" }, member.agent.name),
          h("td", {}, String(member.turns)),
          h("td", {}, member.tokens.toLocaleString()),
          h("td", {}, `$${member.cost_usd.toFixed(4)}`),
          h("td", {}, member.latency_ms ? `${seconds(member.latency_ms.p50)}, ${seconds(member.latency_ms.p95)}` : "–"),
          h("td", {}, member.retries || member.failures ? `${member.retries} (${member.failures})` : "–"),
          h("td", {}, member.tool_calls ? `${member.tool_calls} (${member.tool_failures})` : "–"))))));
    } catch (error) {
      delete figuresNode.dataset.for;
      toast(error.message);
    }
  }

  /// What it came to: decisions, who does what, what is still open. Lists that are empty
  /// are left out; a note says when no model read the transcript for them.
  function outcomeNode(outcome) {
    if (!outcome) return null;
    const list = (title, items, render) => items.length > 0 && h("section", { class: "outcome-part" },
      h("h3", {}, title), h("ul", {}, items.map((item) => h("li", {}, render(item)))));
    return h("div", { class: "outcome" },
      list("Decisions", outcome.decisions, (text) => text),
      list("Action items", outcome.action_items, (item) => [h("strong", {}, item.owner), `: ${item.task}`]),
      list("Open questions", outcome.open_questions, (text) => text),
      outcome.note && h("p", { class: "muted" }, outcome.note));
  }

  /// Swaps the button for a player of the podcast, fetched with the key.
  async function listen(button, url) {
    button.disabled = true;
    try {
      const player = h("audio", { controls: true, src: await blobUrl(url) });
      button.replaceWith(player);
      player.play().catch(() => {});
    } catch (error) {
      button.disabled = false;
      toast(error.message);
    }
  }

  async function refresh() {
    try {
      collaboration = await api.get(`/collaborations/${id}`);
      if (!stopped) renderHeader();
    } catch (error) {
      if (!stopped && !collaboration) put(main, failure(error));
    }
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "hello":
        replayUntil = frame.last_seq;
        if (collaboration && frame.status !== collaboration.status) refresh();
        // Nothing to replay on a running channel: its live end is where to read.
        if (frame.status === "running" && stream.lastSeq >= replayUntil) scrollToEnd();
        break;
      case "turn": {
        turn = frame;
        renderTurnHint();
        // Sent again to a viewer who connects mid-turn, maybe after its message: draw it once.
        if (typing.has(frame.turn_id) || spoken.has(frame.turn_id)) break;
        const human = frame.sender.kind === "human";
        const bubble = messageNode({ sender: frame.sender, role: human ? "human" : "agent", content: "" },
          human ? "waiting for them to type…" : "thinking…");
        typing.set(frame.turn_id, bubble);
        append(bubble, null, true);
        break;
      }
      case "delta": {
        let bubble = typing.get(frame.turn_id);
        if (!bubble) {
          bubble = messageNode({ sender: frame.sender, role: "agent", content: "" }, "typing…");
          typing.set(frame.turn_id, bubble);
          append(bubble);
        }
        bubble.querySelector(".live-label").textContent = " typing…";
        const content = bubble.querySelector(".content");
        if (frame.restart) content.textContent = "";
        else content.textContent += frame.text;
        if (following()) scrollToEnd();
        break;
      }
      case "message": {
        messages += 1;
        spent.tokens += frame.tokens ?? 0;
        spent.cost += frame.cost_usd ?? 0;
        const member = soFar.get(frame.sender.id) ?? { turns: 0, tokens: 0, cost: 0, ms: [] };
        member.turns += 1;
        member.tokens += frame.tokens ?? 0;
        member.cost += frame.cost_usd ?? 0;
        if (frame.ms != null) member.ms.push(frame.ms);
        soFar.set(frame.sender.id, member);
        renderSoFar();
        spoken.add(frame.turn_id);
        if (turn?.turn_id === frame.turn_id) {
          turn = null;
          renderTurnHint();
        }
        const members = collaboration ? [collaboration.principal, ...collaboration.participants].map((m) => m.id) : [];
        const node = messageNode(frame, null, {
          former: collaboration && !members.includes(frame.sender.id),
          onFork: () => fork(frame),
        });
        append(node, typing.get(frame.turn_id), frame.seq <= replayUntil);
        typing.delete(frame.turn_id);
        renderState();
        // Caught up on a running channel: follow it live from here.
        if (frame.seq === replayUntil && collaboration.status === "running") scrollToEnd();
        break;
      }
      case "status":
        for (const bubble of typing.values()) bubble.remove();
        typing.clear();
        turn = null;
        append(h("li", { class: "event", dataset: { seq: frame.seq } },
          `Ended because ${END_REASONS[frame.end_reason] || frame.end_reason || frame.status}.`), null, frame.seq <= replayUntil);
        Object.assign(collaboration, { status: frame.status, end_reason: frame.end_reason, ended_at: frame.ended_at });
        renderHeader();
        refresh();
        break;
      case "tool_call": {
        const block = toolNode(frame);
        calls.set(frame.call_id, block);
        append(block, null, frame.seq <= replayUntil);
        break;
      }
      case "tool_result": {
        const block = calls.get(frame.call_id);
        if (block) {
          fillResult(block, frame);
          calls.delete(frame.call_id);
        } else {
          // Its call came before this viewer's history began.
          const lone = toolNode({ seq: frame.seq, tool: frame.tool, sender: null, arguments: null });
          fillResult(lone, frame);
          append(lone, null, frame.seq <= replayUntil);
        }
        break;
      }
      case "nudge":
        append(h("li", { class: "event nudge", dataset: { seq: frame.seq } },
          h("strong", {}, `Skein nudged ${frame.to.name}: `), `the conversation is going in circles (${frame.reason}).`), null, frame.seq <= replayUntil);
        break;
      case "verdict":
        append(h("li", { class: `event verdict${frame.met ? " met" : ""}`, dataset: { seq: frame.seq } },
          h("strong", {}, frame.met ? "The judge finds the objective met: " : "The judge finds the objective not met yet: "),
          frame.reason), null, frame.seq <= replayUntil);
        break;
      case "summary":
        append(h("li", { class: "event", dataset: { seq: frame.seq } }, "The summary was written: see the top of the page."), null, frame.seq <= replayUntil);
        refresh();
        break;
      case "error":
        toast(frame.message);
        break;
    }
  }

  function onState(next) {
    connection = next;
    if (next.state === "deleted") {
      toast("This collaboration was deleted.");
      location.hash = "#/";
      return;
    }
    renderState();
  }

  /// Asks what the fork changes (its participants, objective and message cap), makes it,
  /// and opens it.
  async function fork(frame) {
    const c = collaboration;
    const dialog = h("dialog", { "aria-labelledby": "fork-title", class: "fork-dialog" });
    const objective = h("textarea", { rows: 3 });
    objective.value = c.objective;
    const cap = h("input", { type: "number", min: "1", value: String(c.message_cap) });
    const current = c.participants.map((p) => p.id);
    // The account's agents but the principal, a checkbox each; the current ones ticked.
    const boxes = [];
    const participants = h("fieldset", { class: "fork-participants" },
      h("legend", {}, "Participants"),
      h("p", { class: "muted" }, "Loading your agents…"),
      h("p", { class: "field-error", "data-error-for": "participants", role: "alert", hidden: true }));
    allAgents().then((agents) => {
      const choices = agents.filter((a) => a.id !== c.principal.id).map((agent) => {
        const box = h("input", { type: "checkbox", name: "participants", value: agent.id, id: `fork-${agent.id}`, checked: current.includes(agent.id) });
        boxes.push(box);
        return h("li", {}, box, " ", h("label", { for: box.id }, agent.name), " ", kindBadge(agent.kind));
      });
      participants.children[1].replaceWith(h("ul", { class: "choices" }, choices));
    }).catch((error) => participants.children[1].replaceWith(failure(error)));
    const form = h("form", { novalidate: true },
      h("h2", { id: "fork-title" }, "Fork from this message"),
      h("p", {}, `The new collaboration starts with the conversation up to #${frame.seq}, then goes on live. ${c.principal.name} still leads; change who takes part, the objective or the cap. This one is not changed.`),
      participants,
      field("Objective", "objective", objective),
      field("Message cap (new messages)", "message_cap", cap),
      h("p", { class: "form-error notice error", role: "alert", tabindex: "-1", hidden: true }),
      h("div", { class: "actions" },
        h("button", { type: "submit", class: "primary" }, "Fork"),
        h("button", { type: "button", onclick: () => dialog.close() }, "Cancel")));
    dialog.append(form);
    document.body.append(dialog);
    dialog.addEventListener("close", () => dialog.remove());
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      try {
        const body = { at_seq: frame.seq, objective: objective.value, message_cap: Number(cap.value) };
        const chosen = boxes.filter((box) => box.checked).map((box) => box.value);
        if (boxes.length > 0 && chosen.join() !== current.join()) body.participants = chosen;
        const created = await api.post(`/collaborations/${c.id}/fork`, body);
        dialog.close();
        toast("Forked: the new collaboration has started.");
        location.hash = `#/c/${created.id}`;
      } catch (error) {
        showErrors(form, error);
      }
    });
    dialog.showModal();
    objective.focus();
  }

  /// The whole record as a Markdown file: fetched with the key in its header, then saved.
  async function downloadTranscript(format) {
    try {
      const url = await blobUrl(`/api/v1/collaborations/${id}/transcript?format=${format}`);
      const link = h("a", { href: url, download: `skein-${id}.${format === "json" ? "json" : "md"}`, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (error) {
      toast(error.message);
    }
  }

  async function stop() {
    if (!(await confirmAction("Stop this collaboration?", "The agents stop now. Everything said so far is kept and a summary is written.", "Stop"))) return;
    try {
      collaboration = await api.post(`/collaborations/${id}/stop`);
      renderHeader();
    } catch (error) {
      toast(error.message);
    }
  }

  async function remove() {
    if (!(await confirmAction("Delete this collaboration?", "Its channel, transcript and summary are deleted for good.", "Delete"))) return;
    try {
      await api.delete(`/collaborations/${id}`);
      toast("Collaboration deleted.");
      location.hash = "#/";
    } catch (error) {
      toast(error.message);
    }
  }

  refresh().then(() => {
    if (stopped || !collaboration) return;
    stream = new ChannelStream(collaboration.channel_id, { onFrame, onState });
  });

  return () => {
    stopped = true;
    stream?.stop();
    window.removeEventListener("scroll", onScroll);
  };
}

/// One message; `live` says what is happening while it is still to come ("thinking…").
function messageNode(message, live, extras = {}) {
  const sender = message.sender;
  return h("li", { class: `message role-${message.role}${live ? " typing" : ""}${message.copied ? " copied" : ""}`, dataset: live ? { turn: "", sender: sender.id } : { seq: message.seq, sender: sender.id } },
    avatar(sender),
    h("div", { class: "bubble" },
      h("div", { class: "from" },
        h("span", { class: "name" }, sender.name), " ", kindBadge(sender.kind), " ", address(sender.address),
        extras.former && h("span", { class: "badge former" }, "former member"),
        message.copied && h("span", { class: "muted copied-label" }, ` copied (#${message.copied.seq} of the original)`),
        live ? h("span", { class: "muted live-label" }, ` ${live}`) : time(message.created_at, true),
        extras.onFork && h("button", { type: "button", class: "fork", title: "Fork from here: a new collaboration that starts with the conversation up to this message", onclick: extras.onFork }, "Fork")),
      h("div", { class: "content" }, message.content)));
}

/// A tool call as a block that opens to its arguments and, once it is in, its result.
function toolNode(call) {
  const name = call.tool.server ? `${call.tool.server} · ${call.tool.name}` : call.tool.name;
  const outcome = h("span", { class: "tool-outcome pending" }, "running…");
  const details = h("details", {},
    h("summary", {},
      h("span", { class: "tool-icon", "aria-hidden": "true" }, "⚙"), " ",
      call.sender ? [h("span", { class: "name" }, call.sender.name), " called "] : "Result of ",
      h("code", {}, name), " ", outcome),
    call.arguments !== null && h("div", { class: "tool-part" },
      h("h4", {}, "Arguments"),
      h("pre", { class: "tool-arguments" }, JSON.stringify(call.arguments, null, 2))));
  return h("li", { class: "event tool", dataset: { seq: call.seq, sender: call.sender?.id ?? "" } }, details);
}

function fillResult(block, result) {
  const outcome = block.querySelector(".tool-outcome");
  outcome.className = `tool-outcome ${result.ok ? "ok" : "failed"}`;
  outcome.textContent = result.interrupted ? "✗ interrupted" : result.ok ? `✓ ${result.ms} ms` : `✗ failed after ${result.ms} ms`;
  // The result is a stored event of its own: its seq is shown with it, inside its call.
  block.querySelector("details").append(h("div", { class: "tool-part", dataset: { seq: result.seq } },
    h("h4", {}, result.ok ? "Result" : "Error"),
    h("pre", { class: "tool-result" }, result.content)));
}

function avatar(sender) {
  const element = h("div", { class: "avatar", "aria-hidden": "true" }, sender.name.slice(0, 1).toUpperCase());
  // Through the CSSOM: the page's CSP allows no inline style attributes.
  element.style.setProperty("--hue", hue(sender.id));
  return element;
}

/// A stable colour per agent, so a reader can follow who is speaking.
function hue(id) {
  let sum = 0;
  for (const char of id) sum = (sum * 31 + char.charCodeAt(0)) % 360;
  return sum;
}
