// Small DOM helpers shared by the views. Text always goes in through textContent, never
// innerHTML, so nothing an agent says can become markup.

/// Builds an element: `h("a", {href: "#/", class: "x", onclick: f}, "text", child)`.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, value);
  }
  element.append(...present(children));
  return element;
}

/// Replaces an element's children, leaving out the `cond && node` that came out false.
export function put(element, ...children) {
  element.replaceChildren(...present(children));
}

function present(children) {
  return children.flat(Infinity).filter((c) => c !== undefined && c !== null && c !== false && c !== "");
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });

/// A timestamp in the viewer's own time zone; the full form is in the title.
export function time(iso, short = false) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const date = new Date(iso);
  return h("time", { datetime: iso, title: date.toString() }, (short ? timeOnly : dateTime).format(date));
}

export function duration(fromIso, toIso) {
  if (!fromIso || !toIso) return "—";
  let seconds = Math.max(0, Math.round((new Date(toIso) - new Date(fromIso)) / 1000));
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  seconds %= 60;
  if (hours) return `${hours} h ${minutes} min`;
  if (minutes) return `${minutes} min ${seconds} s`;
  return `${seconds} s`;
}

/// `agent1qabc…wxyz`: enough to tell addresses apart; the whole one is in the title.
export function shortAddress(address) {
  return address.length > 20 ? `${address.slice(0, 12)}…${address.slice(-6)}` : address;
}

export const STATUS_LABELS = {
  running: "Running",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
};

export const END_REASONS = {
  message_cap: "the message cap was reached",
  inactivity_timeout: "nobody spoke within the inactivity window",
  objective_met: "the objective was met",
  cancelled: "it was stopped",
  token_budget: "the token budget was spent",
  cost_budget: "the cost budget was spent",
  stalled: "the conversation went in circles",
  error: "an agent failed",
};

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, STATUS_LABELS[status] || status);
}

export function kindBadge(kind) {
  return h("span", { class: `kind kind-${kind}` }, kind);
}

/// An agent's address, shortened, with a button that copies the whole of it.
export function address(value) {
  return h(
    "span",
    { class: "address" },
    h("code", { title: value }, shortAddress(value)),
    h("button", { type: "button", class: "copy", "aria-label": `Copy address ${value}`, title: "Copy the whole address", onclick: () => copy(value) }, "Copy"),
  );
}

export async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Not a secure context (plain http on another host): fall back to a selection.
    const area = h("textarea", { class: "offscreen", readonly: true });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  toast("Copied to the clipboard");
}

let toastTimer;
export function toast(message) {
  const element = document.getElementById("toast");
  element.textContent = message;
  element.classList.add("shown");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => element.classList.remove("shown"), 2500);
}

/// Asks before something that cannot be undone; resolves to true when confirmed.
export function confirmAction(title, text, action) {
  const dialog = document.getElementById("confirm");
  dialog.querySelector("h2").textContent = title;
  dialog.querySelector("p").textContent = text;
  const yes = dialog.querySelector("[value=yes]");
  yes.textContent = action;
  dialog.returnValue = "";
  dialog.showModal();
  dialog.querySelector("[value=no]").focus();
  return new Promise((resolve) => {
    // A `close` event is queued, not dispatched at once: one left over from the last time
    // this dialog closed can arrive after it has opened again. Only a close that leaves the
    // dialog closed answers this question.
    const closed = () => {
      if (dialog.open) return;
      dialog.removeEventListener("close", closed);
      resolve(dialog.returnValue === "yes");
    };
    dialog.addEventListener("close", closed);
  });
}

/// Shows a 422's `errors` next to their fields (`[data-error-for=name]`); what has no
/// place of its own, and any other error, goes to the form's `.form-error`.
export function showErrors(form, error) {
  clearErrors(form);
  const general = [];
  for (const { field, message } of error.fieldErrors || []) {
    // `replies[2]` and `participants[0]` belong to the list's own field.
    const name = field.replace(/\[.*$/, "").replace(/\..*$/, "");
    const slot = form.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
    if (slot) {
      slot.textContent = slot.textContent ? `${slot.textContent} ${message}` : message;
      slot.hidden = false;
      const input = form.querySelector(`[name="${CSS.escape(name)}"]`);
      if (input) input.setAttribute("aria-invalid", "true");
    } else {
      general.push(`${field}: ${message}`);
    }
  }
  if (!error.fieldErrors || error.fieldErrors.length === 0) general.push(error.message);
  const box = form.querySelector(".form-error");
  if (general.length) {
    box.textContent = general.join(" ");
    box.hidden = false;
  }
  const first = form.querySelector("[aria-invalid=true], .form-error:not([hidden])");
  if (first) first.focus?.();
}

export function clearErrors(form) {
  for (const slot of form.querySelectorAll("[data-error-for], .form-error")) {
    slot.textContent = "";
    slot.hidden = true;
  }
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
}

/// A labelled form field with its error slot.
export function field(label, name, control, hint) {
  control.id ||= `field-${name}`;
  control.name ||= name;
  const error = h("p", { class: "field-error", id: `${control.id}-error`, "data-error-for": name, role: "alert", hidden: true });
  control.setAttribute("aria-describedby", `${control.id}-error`);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hint && h("p", { class: "hint" }, hint), error);
}

/// A message box for a failed load, with the server's words.
export function failure(error) {
  return h("p", { class: "notice error", role: "alert" }, error.message || String(error));
}
