// `#/teams`: saved rosters with the settings to run them. Each team can be run here on an
// objective, and is reachable as one agent: its A2A card, this server's MCP endpoint and its
// uAgents address are shown with a button to copy each.

import { allAgents, api } from "./api.js";
import { numberOrText, rosterPicker } from "./collaborations.js";
import { address, clearErrors, confirmAction, copy, failure, field, h, kindBadge, put, showErrors, time, toast } from "./ui.js";

export function teamsView(main) {
  const list = h("ul", { class: "teams", "aria-busy": "true" });
  const editor = h("section", { class: "card", hidden: true });
  const create = h("button", { type: "button", class: "primary", onclick: () => openEditor(null) }, "New team");
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Teams"), create),
    h("p", { class: "muted" }, "A team is a saved roster. Run it on an objective here, or let another system delegate to it as one agent: over A2A, over MCP, or as a uAgent."),
    editor,
    list);

  async function load() {
    try {
      const { items } = await api.get("/teams?size=100");
      list.replaceChildren(...(items.length ? items.map(row) : [h("li", { class: "empty" },
        "No teams yet. A team keeps a principal and participants with their settings, so a run is one objective away. ",
        h("button", { type: "button", class: "link", onclick: () => openEditor(null) }, "Create one"))]));
    } catch (error) {
      list.replaceChildren(h("li", {}, failure(error)));
    }
    list.setAttribute("aria-busy", "false");
  }

  function row(team) {
    const members = [team.principal, ...team.participants];
    const objective = h("input", { type: "text", placeholder: "What should the team do?", "aria-label": `Objective for ${team.name}`, autocomplete: "off" });
    const run = h("form", { class: "run-team" },
      objective,
      h("button", { type: "submit", class: "primary" }, "Run"));
    run.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const started = await api.post(`/teams/${team.id}/collaborations`, { objective: objective.value });
        location.hash = `#/c/${started.id}`;
      } catch (error) {
        toast(error.message);
        objective.focus();
      }
    });
    const lost = members.filter((m) => m.deleted);
    return h("li", { class: "team card", dataset: { id: team.id } },
      h("div", { class: "agent-head" },
        h("h2", { class: "name" }, team.name),
        h("span", { class: "actions" },
          h("a", { class: "button", href: `#/?team=${team.id}` }, "Runs"),
          h("button", { type: "button", onclick: () => openEditor(team) }, "Edit"),
          h("button", { type: "button", class: "danger", onclick: () => remove(team) }, "Delete"))),
      team.description && h("p", {}, team.description),
      h("p", { class: "members" }, members.map((m, i) => h("span", { class: m.deleted ? "member deleted" : "member" },
        m.name, m.kind && [" ", kindBadge(m.kind)], i === 0 && h("span", { class: "muted" }, " (principal)"), m.deleted && h("span", { class: "muted" }, " (deleted)")))),
      lost.length > 0 && h("p", { class: "notice error" }, `This team cannot run until ${lost.map((m) => m.name).join(", ")} is replaced: edit its roster.`),
      h("p", { class: "meta" },
        h("span", {}, `${team.strategy === "round_robin" ? "Round robin" : "Manager picks"} · up to ${team.message_cap} messages`),
        h("span", {}, "Created ", time(team.created_at))),
      run,
      h("dl", { class: "reach" },
        h("dt", {}, "A2A card"), h("dd", {}, h("code", {}, team.a2a_card_url), " ", copyButton(team.a2a_card_url, `Copy the A2A card URL of ${team.name}`)),
        h("dt", {}, "MCP endpoint"), h("dd", {}, h("code", {}, team.mcp_url), " ", copyButton(team.mcp_url, "Copy the MCP endpoint")),
        h("dt", {}, "uAgents address"), h("dd", {}, address(team.address), team.answers_uagents ? "" : h("span", { class: "muted" }, " (not taking messages: enable it in Edit)"))));
  }

  async function remove(team) {
    if (!(await confirmAction(`Delete ${team.name}?`, "The team is deleted; the collaborations it ran are kept, and its agents too.", "Delete"))) return;
    try {
      await api.delete(`/teams/${team.id}`);
      toast(`${team.name} was deleted.`);
      load();
    } catch (error) {
      toast(error.message);
    }
  }

  async function openEditor(team) {
    create.hidden = true;
    editor.hidden = false;
    put(editor, h("p", { class: "muted" }, "Loading your agents…"));
    let agents;
    try {
      agents = await allAgents();
    } catch (error) {
      put(editor, failure(error));
      return;
    }
    if (agents.length < 2) {
      put(editor, h("p", {}, "A team needs at least two agents. ", h("a", { href: "#/agents" }, "Create agents first.")),
        h("button", { type: "button", onclick: closeEditor }, "Cancel"));
      return;
    }
    const roster = rosterPicker(agents, team ? { principal: team.principal.id, participants: team.participants.map((p) => p.id) } : {});
    const name = h("input", { type: "text", value: team?.name ?? "", autocomplete: "off" });
    const description = h("input", { type: "text", value: team?.description ?? "" });
    const cap = h("input", { type: "number", inputmode: "numeric", value: team?.message_cap ?? 20 });
    const timeout = h("input", { type: "number", inputmode: "numeric", value: team?.timeout_window ?? 120 });
    const strategy = h("select", {},
      h("option", { value: "manager", selected: team?.strategy !== "round_robin" }, "Manager picks the next speaker"),
      h("option", { value: "round_robin", selected: team?.strategy === "round_robin" }, "Round robin"));
    const evaluate = h("input", { type: "checkbox", id: "team-evaluate", name: "evaluate_objective_completion", checked: team ? team.evaluate_objective_completion : true });
    const uagents = h("input", { type: "checkbox", id: "team-uagents", name: "answers_uagents", checked: team?.answers_uagents ?? false });
    const form = h("form", { class: "form", novalidate: true },
      h("h2", {}, team ? `Edit ${team.name}` : "New team"),
      h("div", { class: "row" }, field("Name", "name", name), field("Description", "description", description)),
      roster.node,
      h("div", { class: "row" },
        field("Message cap", "message_cap", cap, "A run ends after this many messages (a run may set its own)."),
        field("Inactivity timeout (seconds)", "timeout_window", timeout)),
      field("Strategy", "strategy", strategy),
      h("div", { class: "field check" }, evaluate, h("label", { for: evaluate.id }, "End a run early when a judge finds the objective met")),
      h("div", { class: "field check" }, uagents, h("label", { for: uagents.id }, "Take messages from uAgents at the team's address (anyone who knows it can start runs)")),
      h("p", { class: "form-error notice error", role: "alert", tabindex: "-1", hidden: true }),
      h("div", { class: "actions" },
        h("button", { type: "submit", class: "primary" }, team ? "Save" : "Create team"),
        h("button", { type: "button", onclick: closeEditor }, "Cancel")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      const body = {
        name: name.value,
        description: description.value.trim() || null,
        ...roster.value(),
        message_cap: numberOrText(String(cap.value)),
        timeout_window: numberOrText(String(timeout.value)),
        strategy: strategy.value,
        evaluate_objective_completion: evaluate.checked,
        answers_uagents: uagents.checked,
      };
      try {
        const saved = team ? await api.patch(`/teams/${team.id}`, body) : await api.post("/teams", body);
        toast(team ? `${saved.name} was saved.` : `${saved.name} was created.`);
        closeEditor();
        load();
      } catch (error) {
        showErrors(form, error);
      }
    });
    put(editor, form);
    name.focus();
  }

  function closeEditor() {
    editor.hidden = true;
    editor.replaceChildren();
    create.hidden = false;
  }

  load();
}

function copyButton(value, label) {
  return h("button", { type: "button", class: "copy", "aria-label": label, title: label, onclick: () => copy(value) }, "Copy");
}
