// The collaborations list (live status, filters, paging) and the create form.

import { allAgents, api, query } from "./api.js";
import { followEvents } from "./events.js";
import { address, clearErrors, failure, field, h, kindBadge, put, showErrors, STATUS_LABELS, statusBadge, time } from "./ui.js";

const PAGE_SIZE = 20;

/// The first-run demo: scripted agents, so it runs without any model.
const DEMO_AGENTS = [
  { name: "Demo Planner", description: "Frames the evening and decides.", replies: [
    "Friday night for four: dinner, then something with music. @Demo Scout, ideas?",
    "Tapas at seven, then the jazz bar at nine. @Demo Critic, anything wrong with that?",
    "Booked: tapas at seven, jazz at nine. I'll send everyone the addresses."] },
  { name: "Demo Scout", description: "Knows the neighbourhood.", replies: [
    "Tapas on Main Street takes groups, and the jazz bar next door starts at nine.",
    "The tapas place has a table for four at seven; I held it."] },
  { name: "Demo Critic", description: "Finds the catch.", replies: [
    "Jazz on a Friday fills up fast: book both now.",
    "The jazz bar is loud; ask for the booth at the back and it is fine."] },
];
/// How long the list waits, after a change that moves its rows, for more before it asks
/// for its page again: a burst of creates costs one request.
const RELOAD_AFTER_MS = 250;

/// `#/?status=running&agent=…&page=2`: the filters live in the URL so a reload keeps them.
export function listView(main, params) {
  const filters = { status: params.get("status") || "", agent: params.get("agent") || "", team: params.get("team") || "", page: Number(params.get("page")) || 1 };
  const setFilters = (changes) => {
    const next = { ...filters, ...changes };
    location.hash = `#/${query({ status: next.status, agent: next.agent, team: next.team, page: next.page > 1 ? next.page : "" })}`;
  };

  const status = h("select", { name: "status", onchange: () => setFilters({ status: status.value, page: 1 }) },
    h("option", { value: "" }, "Any status"),
    Object.entries(STATUS_LABELS).map(([value, label]) => h("option", { value, selected: value === filters.status }, label)));
  const agent = h("select", { name: "agent", onchange: () => setFilters({ agent: agent.value, page: 1 }) },
    h("option", { value: "" }, "Any agent"));
  const list = h("ul", { class: "collabs", "aria-live": "polite", "aria-busy": "true" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Collaborations"), h("a", { class: "button primary", href: "#/new" }, "New collaboration")),
    h("div", { class: "filters" },
      h("label", {}, "Status ", status),
      h("label", {}, "Agent ", agent),
      filters.team && h("span", { class: "team-filter" }, "Runs of one team · ",
        h("button", { type: "button", class: "link", onclick: () => setFilters({ team: "", page: 1 }) }, "Show all"))),
    list,
    pager,
  );

  allAgents().then((agents) => {
    for (const a of agents) agent.append(h("option", { value: a.id, selected: a.id === filters.agent }, a.name));
  }).catch(() => {});

  let shown = "";
  let timer = null;
  let stopped = false;
  async function load() {
    timer = null;
    try {
      const page = await api.get(`/collaborations${query({ page: filters.page, size: PAGE_SIZE, status: filters.status, agent: filters.agent, team: filters.team })}`);
      if (stopped) return;
      const signature = JSON.stringify(page);
      if (signature !== shown) {
        shown = signature;
        render(page);
      }
    } catch (error) {
      if (stopped) return;
      list.replaceChildren(h("li", {}, failure(error)));
    }
    list.setAttribute("aria-busy", "false");
  }
  const reload = () => {
    if (!stopped && timer === null) timer = setTimeout(load, RELOAD_AFTER_MS);
  };

  /// The list follows the account's changes as they happen. A row on screen is redrawn
  /// from the change itself; a change that may add, remove or move rows (a new one, a
  /// deleted one, one leaving a status filter) reloads the page.
  function changed({ event, data }) {
    const shownRow = list.querySelector(`.collab[data-id="${CSS.escape(data.collaboration_id ?? "")}"]`);
    switch (event) {
      case "ready":
      case "reset":
        reload();
        break;
      case "messages":
        if (shownRow) shownRow.querySelector(".count").textContent = `${data.message_count} of ${shownRow.dataset.cap} messages`;
        break;
      case "created":
      case "deleted":
        reload();
        break;
      default:
        if (filters.status) reload();
        else if (shownRow && data.collaboration) shownRow.replaceWith(row(data.collaboration));
    }
  }

  function render({ items, meta }) {
    const focused = document.activeElement?.dataset?.key;
    if (items.length === 0) {
      const filtered = filters.status || filters.agent || filters.team;
      put(list, h("li", { class: "empty" }, filtered ? "No collaboration matches these filters." : "No collaborations yet. ",
        !filtered && [h("a", { href: "#/new" }, "Start one"), ", or watch three scripted agents plan an evening (no model needed): ",
          h("button", { type: "button", class: "demo", onclick: (event) => startDemo(event.currentTarget) }, "Watch a demo")]));
    } else {
      list.replaceChildren(...items.map(row));
    }
    const pages = Math.max(1, Math.ceil(meta.total / meta.size));
    put(pager,
      h("button", { type: "button", disabled: !meta.has_previous, onclick: () => setFilters({ page: meta.page - 1 }) }, "← Previous"),
      h("span", {}, `Page ${meta.page} of ${pages} · ${meta.total} in all`),
      h("button", { type: "button", disabled: !meta.has_next, onclick: () => setFilters({ page: meta.page + 1 }) }, "Next →"),
    );
    if (focused) document.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
  }

  /// Makes the demo's agents (once: they are found again by name) and starts their
  /// collaboration, then opens its channel.
  async function startDemo(button) {
    button.disabled = true;
    try {
      const existing = await allAgents();
      const ids = [];
      for (const agent of DEMO_AGENTS) {
        const found = existing.find((a) => a.name === agent.name && a.kind === "scripted");
        ids.push((found || await api.post("/agents", { ...agent, kind: "scripted", delay_ms: 900 })).id);
      }
      const created = await api.post("/collaborations", {
        principal: ids[0], participants: ids.slice(1), objective: "Plan a night out with my friends",
        message_cap: 7, timeout_window: 60, strategy: "round_robin",
      });
      location.hash = `#/c/${created.id}`;
    } catch (error) {
      button.disabled = false;
      list.append(h("li", {}, failure(error)));
    }
  }

  load();
  const unfollow = followEvents(changed);
  return () => {
    stopped = true;
    clearTimeout(timer);
    unfollow();
  };
}

function row(c) {
  const names = c.participants.map((p) => p.name).join(", ");
  return h("li", { class: "collab", dataset: { id: c.id, status: c.status, cap: c.message_cap } },
    h("div", { class: "collab-title" },
      statusBadge(c.status),
      h("a", { href: `#/c/${c.id}`, dataset: { key: c.id } }, c.objective)),
    c.headline && h("p", { class: "headline" }, c.headline),
    h("p", { class: "meta" },
      h("span", {}, h("strong", {}, c.principal.name), names ? ` with ${names}` : ""),
      h("span", { class: "count" }, `${c.message_count} of ${c.message_cap} messages`),
      h("span", {}, "Started ", time(c.started_at)),
      c.ended_at && h("span", {}, "Ended ", time(c.ended_at))),
  );
}

/// `#/new`: pick the principal and participants, set the objective and limits, start.
export function createView(main) {
  const form = h("form", { class: "card form", novalidate: true });
  main.append(h("div", { class: "page-head" }, h("h1", {}, "New collaboration")), form);
  form.append(h("p", { class: "muted" }, "Loading your agents…"));
  let stopped = false;
  allAgents().then((agents) => {
    if (!stopped) fill(form, agents);
  }).catch((error) => form.replaceChildren(failure(error)));
  return () => {
    stopped = true;
  };
}

function fill(form, agents) {
  if (agents.length === 0) {
    form.replaceChildren(h("p", {}, "A collaboration needs at least two agents, and this account has none yet. ",
      h("a", { href: "#/agents" }, "Create agents first.")));
    return;
  }
  const roster = rosterPicker(agents);
  const objective = h("textarea", { rows: 3, placeholder: "Plan a night out with my friends" });

  const cap = h("input", { type: "number", inputmode: "numeric", value: 10 });
  const timeout = h("input", { type: "number", inputmode: "numeric", value: 60 });
  const strategy = h("select", {}, h("option", { value: "manager" }, "Manager picks the next speaker"), h("option", { value: "round_robin" }, "Round robin"));
  const evaluate = h("input", { type: "checkbox", id: "field-evaluate_objective_completion", name: "evaluate_objective_completion", checked: true });
  const interject = h("input", { type: "checkbox", id: "field-allow_interjections", name: "allow_interjections", checked: true });
  const budget = h("input", { type: "number", inputmode: "numeric", placeholder: "No limit" });
  const costBudget = h("input", { type: "number", min: "0", step: "0.01", inputmode: "decimal", placeholder: "None" });
  const submit = h("button", { type: "submit", class: "primary" }, "Start collaboration");

  form.replaceChildren(
    roster.node,
    field("Objective", "objective", objective, "What the agents should accomplish."),
    h("div", { class: "row" },
      field("Message cap", "message_cap", cap, "The collaboration ends after this many messages."),
      field("Inactivity timeout (seconds)", "timeout_window", timeout, "It ends when nobody speaks for this long.")),
    h("div", { class: "row" },
      field("Strategy", "strategy", strategy),
      field("Token budget", "token_budget", budget, "Optional: end once this many tokens are used.")),
    h("div", { class: "row" },
      field("Cost budget (US dollars)", "cost_budget_usd", costBudget, "Optional: end once the model calls have cost this much, by the server's price table.")),
    h("div", { class: "field check" }, evaluate, h("label", { for: evaluate.id }, "End early when a judge finds the objective met"),
      h("p", { class: "field-error", "data-error-for": "evaluate_objective_completion", role: "alert", hidden: true })),
    h("div", { class: "field check" }, interject, h("label", { for: interject.id }, "People taking part may speak out of turn"),
      h("p", { class: "field-error", "data-error-for": "allow_interjections", role: "alert", hidden: true })),
    h("p", { class: "form-error notice error", role: "alert", tabindex: "-1", hidden: true }),
    h("div", { class: "actions" }, submit),
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const body = {
      ...roster.value(),
      message_cap: numberOrText(cap.value),
      timeout_window: numberOrText(timeout.value),
      strategy: strategy.value,
      evaluate_objective_completion: evaluate.checked,
      allow_interjections: interject.checked,
    };
    if (objective.value.trim()) body.objective = objective.value;
    if (budget.value.trim()) body.token_budget = numberOrText(budget.value);
    if (costBudget.value.trim()) body.cost_budget_usd = numberOrText(costBudget.value);
    submit.disabled = true;
    try {
      const created = await api.post("/collaborations", body);
      location.hash = `#/c/${created.id}`;
    } catch (error) {
      showErrors(form, error);
    } finally {
      submit.disabled = false;
    }
  });
}

/// The agents of a roster to pick: one principal (a radio), participants (checkboxes), a
/// search over names and addresses, and a line saying who is chosen. `chosen` preselects.
export function rosterPicker(agents, chosen = {}) {
  const search = h("input", { type: "search", placeholder: "Search by name or address", "aria-label": "Search agents", autocomplete: "off" });
  const line = h("p", { class: "chosen", "aria-live": "polite" });
  const picks = [];
  const byId = Object.fromEntries(agents.map((a) => [a.id, a.name]));
  const value = () => ({
    principal: picks.find((p) => p.principal.checked)?.principal.value ?? "",
    participants: picks.filter((p) => p.participant.checked).map((p) => p.participant.value),
  });
  const summarize = () => {
    const { principal, participants } = value();
    line.textContent = `Principal: ${principal ? byId[principal] : "none yet"} · Participants: ${participants.length ? participants.map((id) => byId[id]).join(", ") : "none yet"}`;
  };
  const rows = agents.map((agent) => {
    const principal = h("input", { type: "radio", name: "principal", value: agent.id, "aria-label": `${agent.name} as principal`, checked: chosen.principal === agent.id });
    const participant = h("input", { type: "checkbox", name: "participants", value: agent.id, "aria-label": `${agent.name} as participant`, checked: (chosen.participants ?? []).includes(agent.id) });
    // One agent cannot be both: choosing one role clears the other.
    principal.addEventListener("change", () => {
      participant.checked = false;
      summarize();
    });
    participant.addEventListener("change", () => {
      if (participant.checked) principal.checked = false;
      summarize();
    });
    picks.push({ principal, participant });
    return h("tr", { dataset: { search: `${agent.name} ${agent.address} ${agent.id}`.toLowerCase() } },
      h("td", { class: "pick" }, principal), h("td", { class: "pick" }, participant),
      h("td", {}, h("span", { class: "name" }, agent.name), " ", kindBadge(agent.kind)),
      h("td", { class: "wide-only" }, address(agent.address)));
  });
  search.addEventListener("input", () => {
    const needle = search.value.trim().toLowerCase();
    for (const tr of rows) tr.hidden = needle !== "" && !tr.dataset.search.includes(needle);
  });
  summarize();
  const node = h("fieldset", {},
    h("legend", {}, "Agents"),
    h("p", { class: "hint" }, "One principal leads; pick at least one participant."),
    search,
    h("div", { class: "table-wrap" },
      h("table", { class: "picker" },
        h("thead", {}, h("tr", {}, h("th", {}, "Principal"), h("th", {}, "Participant"), h("th", {}, "Agent"), h("th", { class: "wide-only" }, "Address"))),
        h("tbody", {}, rows))),
    line,
    h("p", { class: "field-error", "data-error-for": "principal", role: "alert", hidden: true }),
    h("p", { class: "field-error", "data-error-for": "participants", role: "alert", hidden: true }));
  return { node, value };
}

/// What the user typed, as a number when it is one; the server says what is wrong if not.
export function numberOrText(value) {
  const trimmed = value.trim();
  return trimmed !== "" && Number.isFinite(Number(trimmed)) ? Number(trimmed) : trimmed;
}
