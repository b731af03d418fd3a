// `#/agents`: the account's agents: list, create, edit, delete, copy an address.

import { allAgents, api } from "./api.js";
import { address, clearErrors, confirmAction, copy, failure, field, h, kindBadge, put, showErrors, time, toast } from "./ui.js";

/// The kinds this server can create, with what the form asks for each.
const KINDS = {
  scripted: "Scripted: speaks fixed replies in turn (no model needed)",
  llm: "LLM: a model on an OpenAI-compatible endpoint",
  http: "HTTP: your program, sent each turn as a signed POST",
  a2a: "A2A: a remote agent speaking the Agent2Agent protocol",
  human: "Human: a person who types in the channel",
  uagent: "uAgent: a Fetch.ai agent, reached by its agent1q… address",
};

export function agentsView(main) {
  const list = h("ul", { class: "agents", "aria-busy": "true" });
  const editor = h("section", { class: "card", hidden: true });
  const reveal = h("section", { class: "card secret", role: "status", hidden: true });
  const create = h("button", { type: "button", class: "primary", onclick: async () => openEditor(null, await providers) }, "New agent");
  main.append(h("div", { class: "page-head" }, h("h1", {}, "Agents"), create), reveal, editor, list);

  /// An http agent's signing secret, shown this once.
  function showSecret(agent) {
    put(reveal,
      h("h2", {}, `${agent.name}'s signing secret`),
      h("p", {}, "Give this to your agent: it checks with it that each turn comes from Skein (Standard Webhooks signatures). It is not shown again."),
      h("p", {}, h("code", { class: "secret-value" }, agent.secret), " ",
        h("button", { type: "button", class: "copy", onclick: () => copy(agent.secret) }, "Copy")),
      h("button", { type: "button", class: "dismiss", onclick: () => (reveal.hidden = true) }, "I have kept it"));
    reveal.hidden = false;
  }

  // The editor waits for these, so that its provider list is never empty by accident.
  const providers = api.get("/providers").then((result) => result.items).catch(() => []);

  async function load() {
    try {
      const agents = await allAgents();
      list.replaceChildren(...(agents.length ? agents.map(row) : [h("li", { class: "empty" }, "No agents yet. Create one to start a collaboration.")]));
    } catch (error) {
      list.replaceChildren(h("li", {}, failure(error)));
    }
    list.setAttribute("aria-busy", "false");
  }

  function row(agent) {
    let detail = "";
    if (agent.kind === "llm") detail = `${agent.provider} · ${agent.model}${agent.tools?.length ? ` · tools from ${agent.tools.map((t) => t.name).join(", ")}` : ""}`;
    else if (agent.kind === "http") detail = agent.endpoint;
    else if (agent.kind === "a2a") detail = agent.card_url;
    else if (agent.kind === "human") detail = "speaks in the channel";
    else if (agent.kind === "uagent") detail = agent.endpoint ?? "found through the Almanac";
    else if (agent.kind === "scripted") detail = `${agent.replies.length} ${agent.replies.length === 1 ? "reply" : "replies"}${agent.delay_ms ? `, ${agent.delay_ms} ms apart` : ""}`;
    return h("li", { class: "agent card", dataset: { id: agent.id } },
      h("div", { class: "agent-head" },
        h("span", { class: "name" }, agent.name), " ", kindBadge(agent.kind),
        h("span", { class: "actions" },
          agent.kind === "uagent" && h("button", { type: "button", class: "check", onclick: (event) => check(agent, event.currentTarget) }, "Check"),
          h("button", { type: "button", onclick: async () => openEditor(agent, await providers) }, "Edit"),
          h("button", { type: "button", class: "danger", onclick: () => remove(agent) }, "Delete"))),
      agent.description && h("p", {}, agent.description),
      h("p", { class: "meta" }, address(agent.address), h("span", {}, detail), h("span", {}, "Created ", time(agent.created_at))));
  }

  /// Asks a uAgent whether it is up, and says what came back.
  async function check(agent, button) {
    button.disabled = true;
    try {
      const result = await api.post(`/agents/${agent.id}/check`, {});
      toast(result.ready ? `${agent.name} is up at ${result.endpoint}.` : `${agent.name} is not ready: ${result.detail}`);
    } catch (error) {
      toast(error.message);
    } finally {
      button.disabled = false;
    }
  }

  async function remove(agent) {
    if (!(await confirmAction(`Delete ${agent.name}?`, "The agent is deleted for good. Collaborations it took part in keep their transcripts.", "Delete"))) return;
    try {
      await api.delete(`/agents/${agent.id}`);
      toast(`${agent.name} was deleted.`);
      load();
    } catch (error) {
      toast(error.message);
    }
  }

  /// The form for a new agent (`agent` null) or for changing one.
  function openEditor(agent, providers) {
    const kind = h("select", { disabled: !!agent }, Object.entries(KINDS).map(([value, label]) => h("option", { value, selected: agent?.kind === value }, label)));
    const name = h("input", { type: "text", value: agent?.name ?? "", autocomplete: "off" });
    const description = h("input", { type: "text", value: agent?.description ?? "" });
    const addr = h("input", { type: "text", value: agent?.address ?? "", placeholder: "Generated when left empty", disabled: !!agent, spellcheck: "false" });
    const provider = h("select", {}, h("option", { value: "" }, "The default provider"),
      providers.map((p) => h("option", { value: p.name, selected: agent?.provider === p.name }, p.default_model ? `${p.name} (default model ${p.default_model})` : p.name)));
    // The provider's own list of models to pick from; any other name may still be typed.
    const modelOptions = h("datalist", { id: "model-options" });
    const model = h("input", { type: "text", value: agent?.model ?? "", placeholder: "The provider's default model", spellcheck: "false", list: "model-options", autocomplete: "off" });
    const offerModels = async () => {
      const name = provider.value || (providers.some((p) => p.name === "default") ? "default" : providers[0]?.name);
      if (!name) return;
      try {
        const { items } = await api.get(`/providers/${encodeURIComponent(name)}/models`);
        modelOptions.replaceChildren(...items.map((m) => h("option", { value: m.id })));
      } catch {
        modelOptions.replaceChildren();
      }
    };
    provider.addEventListener("change", offerModels);
    const prompt = h("textarea", { rows: 4 });
    prompt.value = agent?.system_prompt ?? "";
    const temperature = h("input", { type: "number", step: "0.1", value: agent?.temperature ?? "", placeholder: "Provider default" });
    const maxTokens = h("input", { type: "number", value: agent?.max_tokens ?? "", placeholder: "Provider default" });
    const replies = h("textarea", { rows: 4, placeholder: "One reply per line" });
    replies.value = (agent?.replies ?? []).join("\n");
    const delay = h("input", { type: "number", value: agent?.delay_ms ?? 0 });
    const endpoint = h("input", { type: "url", value: agent?.endpoint ?? "", placeholder: "https://agents.example.com/turn", spellcheck: "false" });
    const cardUrl = h("input", { type: "url", value: agent?.card_url ?? "", placeholder: "https://agent.example.com (its card is found at /.well-known/agent-card.json)", spellcheck: "false" });
    const a2aStored = agent?.credential_headers?.length > 0;
    const a2aBearer = h("input", { type: "password", value: "", autocomplete: "off",
      placeholder: a2aStored ? "Stored; leave empty to keep it" : "Optional" });

    const tools = toolServers(agent);
    const llmFields = h("div", {},
      providers.length === 0 && h("p", { class: "notice advisory" }, "No model provider is configured on this server, so LLM agents cannot be created. Set SKEIN_LLM_BASE_URL (or OPENAI_API_KEY / FLOCK_LLM_API_KEY) and restart."),
      h("div", { class: "row" }, field("Provider", "provider", provider), field("Model", "model", model)),
      modelOptions,
      field("System prompt", "system_prompt", prompt, "Who this agent is and how it should behave."),
      h("div", { class: "row" }, field("Temperature", "temperature", temperature), field("Max tokens per turn", "max_tokens", maxTokens)),
      tools.node);
    const scriptedFields = h("div", {},
      field("Replies", "replies", replies, "Spoken in order, one per turn, starting again after the last."),
      field("Delay before each reply (ms)", "delay_ms", delay));
    const httpFields = h("div", {},
      field("Endpoint", "endpoint", endpoint, "http: each turn is POSTed here as JSON; answer {\"content\": \"…\"}. uAgent: its /submit URL (may be left empty when the server has an Almanac). See the README's \"Bring your own agent\"."));
    const uagentFields = h("p", { class: "hint" }, "A Fetch.ai uAgent speaking the chat protocol: give its agent1q… address and its endpoint. It must be up when you create it.");
    const a2aFields = h("div", {},
      field("Agent card URL", "card_url", cardUrl, "The agent's card, or its base URL. A Skein team's is on its card in Teams."),
      field("Bearer token", "bearer", a2aBearer, "Sent as Authorization: Bearer … with its card and every call (for a Skein team: a key of its server). Stored sealed, never shown again."));
    const humanFields = h("p", { class: "hint" }, "A person: when the turn is theirs, the channel waits for them to type.");
    const showKind = () => {
      llmFields.hidden = kind.value !== "llm";
      scriptedFields.hidden = kind.value !== "scripted";
      httpFields.hidden = kind.value !== "http";
      a2aFields.hidden = kind.value !== "a2a";
      humanFields.hidden = kind.value !== "human";
      uagentFields.hidden = kind.value !== "uagent";
      httpFields.hidden = kind.value !== "http" && kind.value !== "uagent";
    };
    kind.addEventListener("change", showKind);
    showKind();
    if (providers.length > 0) offerModels();

    const form = h("form", { novalidate: true },
      h("h2", {}, agent ? `Edit ${agent.name}` : "New agent"),
      field("Kind", "kind", kind),
      h("div", { class: "row" }, field("Name", "name", name), field("Address", "address", addr, agent ? "An agent's address never changes." : "An existing agent1q… address, if the agent has one.")),
      field("Description", "description", description),
      llmFields,
      scriptedFields,
      httpFields,
      a2aFields,
      humanFields,
      uagentFields,
      h("p", { class: "form-error notice error", role: "alert", tabindex: "-1", hidden: true }),
      h("div", { class: "actions" },
        h("button", { type: "submit", class: "primary" }, agent ? "Save" : "Create agent"),
        h("button", { type: "button", onclick: closeEditor }, "Cancel")));

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      const body = { name: name.value, description: description.value.trim() || null };
      if (!agent) {
        body.kind = kind.value;
        if (addr.value.trim()) body.address = addr.value.trim();
      }
      if (kind.value === "llm") {
        if (provider.value) body.provider = provider.value;
        if (model.value.trim()) body.model = model.value.trim();
        body.system_prompt = prompt.value.trim() || null;
        body.temperature = numberOrNull(temperature.value);
        body.max_tokens = numberOrNull(maxTokens.value);
        body.tools = tools.value();
      } else if (kind.value === "scripted") {
        body.replies = replies.value.split("\n").map((line) => line.trim()).filter(Boolean);
        body.delay_ms = numberOrNull(delay.value) ?? 0;
      } else if (kind.value === "http") {
        body.endpoint = endpoint.value.trim();
      } else if (kind.value === "uagent") {
        body.endpoint = endpoint.value.trim() || null;
      } else if (kind.value === "a2a") {
        body.card_url = cardUrl.value.trim();
        if (a2aBearer.value) body.bearer = a2aBearer.value;
      }
      try {
        const saved = agent ? await api.patch(`/agents/${agent.id}`, body) : await api.post("/agents", body);
        toast(agent ? `${saved.name} was saved.` : `${saved.name} was created.`);
        closeEditor();
        if (saved.secret) showSecret(saved);
        load();
      } catch (error) {
        showErrors(form, error);
      }
    });

    editor.replaceChildren(form);
    editor.hidden = false;
    create.hidden = true;
    name.focus();
  }

  function closeEditor() {
    editor.hidden = true;
    editor.replaceChildren();
    create.hidden = false;
  }

  load();
}

/// The MCP servers of an llm agent's form: each with its URL, a name, a bearer token
/// (stored sealed: left empty, the stored one is kept) and the tools it may call. For a saved
/// agent, "Show tools" asks its servers what they offer and lets you tick the allowed ones.
function toolServers(agent) {
  const rows = [];
  const list = h("div", { class: "tool-servers" });
  const node = h("fieldset", { class: "tools" },
    h("legend", {}, "Tools (MCP servers)"),
    h("p", { class: "hint" }, "The model may call these servers' tools during its turn; every call and result is shown in the channel."),
    list,
    h("div", { class: "actions" },
      h("button", { type: "button", class: "add-tool-server", onclick: () => add(null) }, "Add an MCP server"),
      agent?.tools?.length > 0 && h("button", { type: "button", class: "show-tools", onclick: (event) => show(event.currentTarget) }, "Show tools")));

  function add(server) {
    const i = rows.length;
    const url = h("input", { type: "url", value: server?.url ?? "", placeholder: "https://tools.example.com/mcp", spellcheck: "false" });
    const name = h("input", { type: "text", value: server?.name ?? "", placeholder: "The URL's host" });
    const stored = server?.credential_headers?.length > 0;
    const bearer = h("input", { type: "password", value: "", autocomplete: "off",
      placeholder: stored ? "Stored; leave empty to keep it" : "Optional" });
    const allow = h("input", { type: "text", value: server?.allow?.join(", ") ?? "", placeholder: "Every tool the server offers", spellcheck: "false" });
    const offered = h("div", { class: "offered" });
    const row = h("div", { class: "tool-server card" },
      h("div", { class: "row" }, field("Server URL", `tools[${i}].url`, url), field("Name", `tools[${i}].name`, name)),
      h("div", { class: "row" },
        field("Bearer token", `tools[${i}].bearer`, bearer),
        field("Allowed tools", `tools[${i}].allow`, allow, "Tool names, comma separated.")),
      offered,
      h("div", { class: "actions" }, h("button", { type: "button", class: "danger", onclick: () => { row.remove(); rows.splice(rows.indexOf(entry), 1); } }, "Remove this server")));
    const entry = { url, name, bearer, allow, offered, original: server };
    rows.push(entry);
    list.append(row);
    if (!server) url.focus();
  }

  /// Lists every tool of the saved servers, a checkbox each: ticked ones are allowed.
  async function show(button) {
    button.disabled = true;
    try {
      const { items } = await api.get(`/agents/${agent.id}/tools?all=true`);
      for (const entry of rows) {
        const mine = items.filter((tool) => tool.tool.server === entry.original?.name);
        if (!entry.original) continue;
        put(entry.offered, mine.length === 0 ? h("p", { class: "muted" }, "This server offers no tools.") :
          h("ul", { class: "offered-tools" }, mine.map((tool) => {
            const box = h("input", { type: "checkbox", checked: tool.allowed, onchange: () => {
              const names = new Set(entry.allow.value.split(",").map((n) => n.trim()).filter(Boolean));
              if (names.size === 0) mine.forEach((t) => t.allowed && names.add(t.tool.name));
              if (box.checked) names.add(tool.tool.name);
              else names.delete(tool.tool.name);
              entry.allow.value = [...names].join(", ");
            } });
            return h("li", {}, h("label", {}, box, " ", h("code", {}, tool.tool.name), tool.description ? ` — ${tool.description}` : ""));
          })));
      }
    } catch (error) {
      toast(error.message);
    } finally {
      button.disabled = false;
    }
  }

  (agent?.tools ?? []).forEach(add);
  return {
    node,
    value: () => rows.map((entry) => {
      const server = { url: entry.url.value.trim() };
      if (entry.name.value.trim()) server.name = entry.name.value.trim();
      if (entry.bearer.value) server.bearer = entry.bearer.value;
      const allow = entry.allow.value.split(",").map((n) => n.trim()).filter(Boolean);
      if (allow.length) server.allow = allow;
      return server;
    }),
  };
}

function numberOrNull(value) {
  const trimmed = String(value).trim();
  return trimmed === "" ? null : Number(trimmed);
}
