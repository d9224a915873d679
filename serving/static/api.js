// Talking to the API from both pages: JSON in and out, the API key from localStorage in
// X-API-Key, and the API's {"error", "detail"} bodies turned into sentences for people.

// each page keeps its own key: the web page an events key (RECSYS_API_EVENTS_KEY), the
// operator page an admin key (RECSYS_API_ADMIN_KEY); the web page never sees the admin key
const KEY_STORE = location.pathname.startsWith("/ops") ? "recsys.adminKey" : "recsys.eventsKey";
try { localStorage.removeItem("recsys.apiKey"); } catch { /* the key both pages once shared */ }

export const store = {
  get(name) {
    try { return localStorage.getItem(name); } catch { return null; }
  },
  set(name, value) {
    try { localStorage.setItem(name, value); } catch { /* private mode: session only */ }
  },
  remove(name) {
    try { localStorage.removeItem(name); } catch { /* ignore */ }
  },
};

export class ApiError extends Error {
  constructor(status, code, detail, retryAfter = null) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }

  get needsKey() { return this.status === 401 || this.status === 403; }
}

/** fetch() a JSON endpoint; throws ApiError with the server's detail on a non-2xx answer. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = store.get(KEY_STORE);
  if (key) headers["X-API-Key"] = key;
  let resp;
  try {
    resp = await fetch(path, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "Cannot reach the server. Check that it is running " +
      "and your connection, then try again.");
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!resp.ok) {
    const detail = (data && (data.detail || data.error)) ||
      `The server answered ${resp.status} ${resp.statusText}.`;
    throw new ApiError(resp.status, (data && data.error) || `http_${resp.status}`,
      String(detail), resp.headers.get("Retry-After"));
  }
  return data;
}

/** A sentence for people: what went wrong and, when it helps, what to do. */
export function describeError(err) {
  if (!(err instanceof ApiError)) return `Something went wrong: ${err && err.message || err}`;
  const detail = err.detail.charAt(0).toUpperCase() + err.detail.slice(1);
  const end = /[.!?]$/.test(detail) ? "" : ".";
  switch (err.status) {
    case 401: return `An API key is needed: ${detail}${end}`;
    case 403: return `That API key was refused: ${detail}${end}`;
    case 429: {
      const wait = err.retryAfter ? ` Try again in ${err.retryAfter} s.` : " Try again later.";
      return `Too many refused keys from here: ${detail}${end}${wait}`;
    }
    case 503: {
      const wait = err.retryAfter ? ` Try again in ${err.retryAfter} s.` : " Try again soon.";
      return `The service is not ready: ${detail}${end}${wait}`;
    }
    default: return `${detail}${end}`;
  }
}

// --- the API key dialog ------------------------------------------------------------------

/** Ask for the API key in the page's <dialog id="key-dialog">; resolves true once a key is
 *  saved, false when the person cancels. */
let asking = null; // the open prompt: concurrent callers share it

export function askForKey(reason) {
  if (!asking) {
    asking = promptForKey(reason).finally(() => { asking = null; });
  }
  return asking;
}

function promptForKey(reason) {
  const dialog = document.getElementById("key-dialog");
  const form = dialog.querySelector("form");
  const input = dialog.querySelector("input");
  dialog.querySelector(".key-reason").textContent = reason || "";
  input.value = store.get(KEY_STORE) || "";
  return new Promise((resolve) => {
    const done = (ok) => {
      form.removeEventListener("submit", onSubmit);
      dialog.removeEventListener("close", onClose);
      if (dialog.open) dialog.close();
      resolve(ok);
    };
    const onSubmit = (ev) => {
      ev.preventDefault();
      const value = input.value.trim();
      if (!value) { input.focus(); return; }
      store.set(KEY_STORE, value);
      done(true);
    };
    const onClose = () => done(false);
    dialog.querySelector("[data-close]").onclick = () => dialog.close();
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("close", onClose);
    dialog.showModal();
    input.focus();
  });
}

export function forgetKey() { store.remove(KEY_STORE); }
export function hasKey() { return Boolean(store.get(KEY_STORE)); }

/** Run ``call``; on 401/403 ask for the key and run it again (until it works or the person
 *  cancels, which rethrows the last error). */
export async function withKey(call) {
  for (;;) {
    try {
      return await call();
    } catch (err) {
      if (!(err instanceof ApiError) || !err.needsKey) throw err;
      const ok = await askForKey(describeError(err));
      if (!ok) throw err;
    }
  }
}
