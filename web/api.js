// The REST client: the API key, JSON in and out, and problem+json errors as ApiError.
//
// The key lives in this browser's localStorage and travels only in the Authorization
// header; it never goes into a URL the server sees (WebSockets use single-use tickets).

const KEY_ITEM = "skein.key";

export function getKey() {
  return localStorage.getItem(KEY_ITEM);
}

export function setKey(key) {
  localStorage.setItem(KEY_ITEM, key.trim());
}

export function clearKey() {
  localStorage.removeItem(KEY_ITEM);
}

/// A failed request: the HTTP status and the server's problem document (RFC 9457).
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `request failed (${status})`);
    this.status = status;
    this.problem = problem;
  }

  /// `[{field, message}]` for a 422, else empty.
  get fieldErrors() {
    return Array.isArray(this.problem.errors) ? this.problem.errors : [];
  }
}

/// Calls the API with the stored key. Resolves to the JSON body (null for 204); rejects
/// with ApiError. A 401 also tells the app the key no longer works.
export async function request(method, path, body, key = getKey()) {
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(`/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, { title: "The server could not be reached", detail: "The server could not be reached. Check that Skein is running." });
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const problem = json && typeof json === "object" ? json : { title: response.statusText, detail: text };
    if (response.status === 401 && key === getKey()) {
      window.dispatchEvent(new CustomEvent("skein:unauthorized", { detail: problem.detail }));
    }
    throw new ApiError(response.status, problem);
  }
  return json;
}

export const api = {
  get: (path) => request("GET", path),
  post: (path, body = {}) => request("POST", path, body),
  patch: (path, body) => request("PATCH", path, body),
  delete: (path) => request("DELETE", path),
};

/// A file the API serves (a podcast), as a blob URL the page can play: the key goes in
/// the header, never in a URL.
export async function blobUrl(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${getKey()}` }, cache: "no-store" });
  if (!response.ok) throw new ApiError(response.status, { detail: `the file could not be loaded (${response.status})` });
  return URL.createObjectURL(await response.blob());
}

/// Every agent of the account, in pages of 100 (the API's largest page).
export async function allAgents() {
  const agents = [];
  for (let page = 1; ; page++) {
    const result = await api.get(`/agents?page=${page}&size=100`);
    agents.push(...result.items);
    if (!result.meta.has_next) return agents;
  }
}

/// A query string from an object, leaving out empty values.
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
