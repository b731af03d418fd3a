// The web UI's entry point: sign-in, the hash router and the navigation.
//
// Routes live in the URL fragment (`#/`, `#/new`, `#/teams`, `#/agents`, `#/c/{id}`), so the server
// serves one page and a reload or a shared link opens the same view. The sign-in link that
// `skein serve` prints carries the key as `#key=…`: a fragment never reaches the server,
// and the key is moved into localStorage and out of the address bar at once.

import { ApiError, clearKey, getKey, request, setKey } from "./api.js";
import { agentsView } from "./agents.js";
import { channelView } from "./channel.js";
import { createView, listView } from "./collaborations.js";
import { teamsView } from "./teams.js";
import { confirmAction, h } from "./ui.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signOut = document.getElementById("sign-out");
let dispose = null;

/// Takes the key a sign-in link carries. A browser already signed in with another key asks
/// first: a link from someone else must not silently swap the account you are working in.
async function takeKeyFromFragment() {
  const match = location.hash.match(/^#key=([^&]+)/);
  if (!match) return;
  const offered = decodeURIComponent(match[1]);
  history.replaceState(null, "", `${location.pathname}#/`);
  const current = getKey();
  if (current && current !== offered) {
    const switching = await confirmAction(
      "Sign in with another key?",
      `This link signs you in with the key ${offered.slice(0, 12)}…, but you are signed in with ${current.slice(0, 12)}…. Switch to the link's key?`,
      "Switch keys",
    );
    if (!switching) return;
  }
  setKey(offered);
}

function route() {
  if (dispose) dispose();
  dispose = null;
  main.replaceChildren();
  const signedIn = !!getKey();
  nav.hidden = !signedIn;
  signOut.hidden = !signedIn;
  if (!signedIn) {
    signInView();
    return;
  }
  const [path, search] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(search || "");
  const channel = path.match(/^\/c\/([0-9a-f-]+)$/i);
  let section;
  if (channel) {
    section = "collaborations";
    dispose = channelView(main, channel[1]);
  } else if (path === "/new") {
    section = "new";
    dispose = createView(main);
  } else if (path === "/agents") {
    section = "agents";
    dispose = agentsView(main);
  } else if (path === "/teams") {
    section = "teams";
    dispose = teamsView(main);
  } else {
    section = "collaborations";
    dispose = listView(main, params);
  }
  for (const link of nav.querySelectorAll("a")) {
    if (link.dataset.nav === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${{ collaborations: "Collaborations", new: "New collaboration", agents: "Agents", teams: "Teams" }[section]} · Skein`;
  main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

function signInView(message) {
  document.title = "Sign in · Skein";
  const key = h("input", { type: "password", id: "key", name: "key", autocomplete: "current-password", placeholder: "sk_…", spellcheck: "false" });
  const error = h("p", { class: "field-error", id: "key-error", role: "alert", hidden: !message }, message || "");
  key.setAttribute("aria-describedby", "key-error");
  const form = h("form", { class: "card form sign-in" },
    h("h1", {}, "Sign in"),
    h("p", {}, "Open the link that ", h("code", {}, "skein serve"), " printed when it first started, or paste an API key. This browser keeps the key; it is sent only in request headers."),
    h("div", { class: "field" }, h("label", { for: "key" }, "API key"), key, error),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Sign in")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const candidate = key.value.trim();
    try {
      await request("GET", "/collaborations?size=1", undefined, candidate);
      setKey(candidate);
      if (!location.hash.startsWith("#/")) location.hash = "#/";
      route();
    } catch (failure) {
      error.textContent = failure instanceof ApiError && failure.status === 401 ? "That key was not accepted." : failure.message;
      error.hidden = false;
      key.focus();
    }
  });
  main.append(form);
  key.focus();
}

signOut.addEventListener("click", () => {
  clearKey();
  route();
});

// A key that stops working (revoked, or the server's admin key changed) signs out.
window.addEventListener("skein:unauthorized", () => {
  if (dispose) dispose();
  dispose = null;
  clearKey();
  nav.hidden = signOut.hidden = true;
  main.replaceChildren();
  signInView("Your key is no longer accepted. Sign in again.");
});

window.addEventListener("hashchange", async () => {
  if (location.hash.startsWith("#key=")) await takeKeyFromFragment();
  route();
});

await takeKeyFromFragment();
route();

