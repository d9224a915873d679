// The people page (/): pick a user, search, open a movie, rate or mark it watched, and see
// "Recommended for you" follow along live (server-sent events, plus a short poll after each
// write in case an event is missed).

import { api, describeError, store, withKey } from "./api.js";
import { capitalize, clock, debounce, el, poster } from "./dom.js";
import {
  actionStatus, checkedStars, closeMovie, initMovie, loadPredicted, movie, openMovie, setStars,
} from "./movie.js";

/** A read: like a write, it asks for the key when the API wants one for reads too. */
const read = (path, opts) => withKey(() => api(path, opts));

const USER_STORE = "recsys.user";
const RECENT_STORE = "recsys.recentUsers";
const HIDDEN_GENRES = new Set(["unknown", "(no genres listed)"]);
const FALLBACK_TEXT = {
  cold_start: ["warn", "Popular now — rate a few movies to personalise these picks."],
  user_state_unavailable: ["warn", "Popular now — your history cannot be read at the " +
    "moment, so these picks are not personal. They will be again shortly."],
  stale_vector: ["info", "Personalised from your history, recomputed for the newest " +
    "model version."],
  no_vector: ["info", "Personalised from your latest events, computed just now."],
};
const APPLY_POLL_MS = 600;
const APPLY_TIMEOUT_MS = 20000;
const FALLBACK_REFRESH_MS = 15000;

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const state = {
  user: null,
  genres: new Set(),
  surface: null, // "for_you" or "up_next"; null: the model's default surface
  shown: { key: null, ids: [] }, // what "Recommended for you" shows now
  recSeq: 0,
  applied: null, // events the stream applied for the user (profile), null before the first read
  source: null, // EventSource of the user's updates
  writeSeq: 0,
  searchAbort: null,
};

// --- small helpers ------------------------------------------------------------------------

function showError(err) {
  if (err && err.name === "AbortError") return;
  $("error-text").textContent = describeError(err);
  $("error").hidden = false;
}

function clearError() { $("error").hidden = true; }

// --- the user -----------------------------------------------------------------------------

// the id grammar of the stream and the API: ASCII letters, digits and . _ ~ : @ + -,
// not starting with a dot, at most 128 characters ("José Ruiz" becomes "Jose-Ruiz")
function toUserId(text) {
  return text.normalize("NFKD").replace(/[\u0300-\u036f]/g, "").trim()
    .replace(/\s+/g, "-").replace(/[^A-Za-z0-9._~:@+-]/g, "").replace(/^\.+/, "")
    .slice(0, 128);
}

function recentUsers() {
  try { return JSON.parse(store.get(RECENT_STORE) || "[]").filter((u) => typeof u === "string"); }
  catch { return []; }
}

function remember(user) {
  store.set(USER_STORE, user);
  const recent = [user, ...recentUsers().filter((u) => u !== user)].slice(0, 6);
  store.set(RECENT_STORE, JSON.stringify(recent));
}

function showWelcome() {
  $("app").hidden = true;
  $("user-section").hidden = false;
  const recent = recentUsers();
  $("recent-users-box").hidden = recent.length === 0;
  $("recent-users").replaceChildren(...recent.map((u) => el("li", {},
    el("button", { type: "button", class: "chip", onclick: () => enterApp(u) }, u))));
  $("user-input").value = state.user || "";
  $("user-input").focus();
}

function onUserSubmit(ev) {
  ev.preventDefault();
  const raw = $("user-input").value;
  const user = toUserId(raw);
  const error = $("user-error");
  if (!user) {
    error.textContent = "Type a name or an id to continue.";
    $("user-input").setAttribute("aria-invalid", "true");
    $("user-input").focus();
    return;
  }
  error.textContent = "";
  $("user-input").removeAttribute("aria-invalid");
  enterApp(user);
}

function enterApp(user) {
  const switching = state.user !== user;
  state.user = user;
  remember(user);
  $("who-name").textContent = user;
  $("who").hidden = false;
  $("user-section").hidden = true;
  $("app").hidden = false;
  document.title = `Movie picks for ${user} · recsys-stream`;
  if (switching) {
    state.shown = { key: null, ids: [] };
    state.applied = null;
    subscribe();
    refreshAll("initial");
    if (movie.id) openMovie(movie.id, false);
  }
  $("search-input").focus();
}

// --- live updates -------------------------------------------------------------------------

function subscribe() {
  if (state.source) state.source.close();
  if (!("EventSource" in window)) return;
  const source = new EventSource(`/v1/users/${enc(state.user)}/updates`);
  source.addEventListener("updated", () => refreshAll("live"));
  source.addEventListener("open", () => setLive(true));
  source.addEventListener("error", () => setLive(false, source.readyState === 2));
  state.source = source;
}

function setLive(on, closed = false) {
  const node = $("live");
  node.dataset.live = on ? "on" : "off";
  node.textContent = on ? "Live" : closed ? "Refreshing every 15 s" : "Reconnecting…";
  node.title = on ? "Updates arrive as soon as the stream applies your events"
    : closed ? "The live connection was refused; the page refreshes on its own"
      : "The live connection dropped; the browser is reconnecting";
}

function refreshAll(cause) {
  return Promise.all([loadRecs(cause), loadBecause(), loadProfile()]);
}

// --- recommendations ----------------------------------------------------------------------

async function loadRecs(cause) {
  const seq = ++state.recSeq;
  const params = new URLSearchParams({ k: "12" });
  if (state.surface) params.set("surface", state.surface);
  for (const g of state.genres) params.append("genre", g);
  const list = $("recs-list");
  list.setAttribute("aria-busy", "true");
  try {
    const body = await read(`/v1/users/${enc(state.user)}/recommendations?${params}`);
    if (seq === state.recSeq) {
      markSurface(body.surface);
      renderRecs(body, cause, `${body.surface}:${[...state.genres].sort().join("|")}`);
    }
  } catch (err) {
    if (seq === state.recSeq) showError(err);
  } finally {
    if (seq === state.recSeq) list.setAttribute("aria-busy", "false");
  }
}

function renderRecs(body, cause, key) {
  const ids = body.items.map((it) => it.movie_id);
  const sameFilter = state.shown.key === key;
  if (sameFilter && ids.join(",") === state.shown.ids.join(",") && cause !== "initial") {
    return; // nothing changed (a second notice for the same event)
  }
  const before = new Set(sameFilter ? state.shown.ids : ids);
  const fresh = ids.filter((id) => !before.has(id));
  state.shown = { key, ids };

  const [kind, text] = FALLBACK_TEXT[body.fallback_reason] || [null, null];
  const notice = $("fallback");
  notice.hidden = !text;
  notice.className = kind === "info" ? "notice info" : "notice";
  notice.textContent = text || "";
  notice.dataset.reason = body.fallback_reason || "";

  const list = $("recs-list");
  if (body.items.length === 0) {
    list.replaceChildren(el("li", { class: "empty" }, state.genres.size
      ? "No movie left in these genres. Pick another genre or clear the filter."
      : "No recommendations yet."));
  } else {
    list.replaceChildren(...body.items.map((it) => movieCard(it, fresh.includes(it.movie_id))));
  }
  const n = Number(list.dataset.renders || 0) + 1;
  list.dataset.renders = String(n);
  list.dataset.version = String(body.model_version);

  const status = $("recs-updated");
  if (cause === "live" && sameFilter) {
    status.textContent = fresh.length
      ? `Updated live at ${clock()}: ${fresh.length} new ${fresh.length === 1 ? "pick" : "picks"}`
      : `Updated live at ${clock()}: new order`;
  } else {
    status.textContent = `Model version ${body.model_version}`;
  }
}

function movieCard(item, isNew) {
  const genres = (item.genres || []).map((g) => el("span", { class: "tag" }, g));
  return el("li", { class: isNew ? "card flash" : "card", "data-movie-id": item.movie_id },
    isNew ? el("span", { class: "badge" }, "New") : null,
    poster(item.title, item.year),
    el("div", { class: "card-body" },
      el("h3", {}, el("button", { type: "button", onclick: () => navigateToMovie(item.movie_id) },
        item.title)),
      el("p", { class: "why" }, capitalize(item.reason)),
      el("div", {}, genres)));
}

async function loadBecause() {
  try {
    const body = await read(`/v1/users/${enc(state.user)}/because-you-watched?k=8`);
    const section = $("byw");
    if (!body.source || body.items.length === 0) {
      section.hidden = true;
      return;
    }
    $("byw-source").textContent = body.source.title;
    $("byw-list").replaceChildren(...body.items.map((it) => movieCard(it, false)));
    updateRowNav($("byw-list"));
    section.hidden = false;
  } catch (err) {
    showError(err);
  }
}

async function loadGenres() {
  try {
    const body = await read("/v1/genres");
    const chips = body.genres.filter((g) => !HIDDEN_GENRES.has(g)).map((g) =>
      el("button", { type: "button", class: "chip", "aria-pressed": "false", "data-genre": g,
        onclick: () => toggleGenre(g) }, g));
    const all = el("button", { type: "button", class: "chip", "aria-pressed": "true",
      "data-genre": "", onclick: () => toggleGenre(null) }, "All genres");
    $("genres").replaceChildren(all, ...chips);
  } catch (err) {
    showError(err);
  }
}

// the ranking shown: "Up next" (the moment) or "Top picks for you" (long-term taste)
function markSurface(surface) {
  for (const chip of $("surfaces").querySelectorAll(".chip")) {
    chip.setAttribute("aria-pressed", String(chip.dataset.surface === surface));
  }
}

function chooseSurface(surface) {
  state.surface = surface;
  markSurface(surface);
  loadRecs("filter");
}

function toggleGenre(genre) {
  if (genre === null) state.genres.clear();
  else if (state.genres.has(genre)) state.genres.delete(genre);
  else state.genres.add(genre);
  for (const chip of $("genres").querySelectorAll(".chip")) {
    const g = chip.dataset.genre;
    chip.setAttribute("aria-pressed", String(g ? state.genres.has(g) : state.genres.size === 0));
  }
  loadRecs("filter");
}

// --- profile and history ------------------------------------------------------------------

async function loadProfile() {
  try {
    const body = await read(`/v1/users/${enc(state.user)}?limit=24`);
    state.applied = body.events_applied;
    renderHistory(body.history);
  } catch (err) {
    if (err.status === 404) {
      state.applied = 0;
      renderHistory([]);
    } else {
      showError(err);
    }
  }
  return state.applied;
}

function renderHistory(items) {
  $("history-empty").hidden = items.length > 0;
  $("history-list").replaceChildren(...items.map((h) => {
    const what = h.rating !== null && h.rating !== undefined
      ? `${h.rating} ★`
      : `watched ${Math.round((h.completion || 0) * 100)}%`;
    return el("li", {}, el("button", { type: "button",
      onclick: () => navigateToMovie(h.movie_id) },
      el("span", {}, h.title || `Movie ${h.movie_id}`), el("span", { class: "what" }, what)));
  }));
}

// --- search -------------------------------------------------------------------------------

async function runSearch() {
  const q = $("search-input").value.trim();
  if (state.searchAbort) state.searchAbort.abort();
  const results = $("search-results");
  const status = $("search-status");
  if (!q) {
    results.replaceChildren();
    status.textContent = "";
    return;
  }
  const abort = new AbortController();
  state.searchAbort = abort;
  try {
    const body = await read(`/v1/movies/search?q=${enc(q)}&limit=8`, { signal: abort.signal });
    results.replaceChildren(...body.items.map((it) => el("li", {},
      el("button", { type: "button", "data-movie-id": it.movie_id,
        onclick: () => { navigateToMovie(it.movie_id); results.replaceChildren(); status.textContent = ""; } },
      el("span", { class: "title" }, it.title),
      el("span", { class: "sub" }, (it.genres || []).slice(0, 2).join(", "))))));
    status.textContent = body.items.length
      ? `${body.items.length} ${body.items.length === 1 ? "movie" : "movies"} found`
      : `No movie matches “${q}”.`;
  } catch (err) {
    if (err.name !== "AbortError") showError(err);
  }
}

function onSearchKeys(ev) {
  const buttons = [...$("search-results").querySelectorAll("button")];
  const at = buttons.indexOf(document.activeElement);
  if (ev.key === "ArrowDown" && buttons.length) {
    ev.preventDefault();
    buttons[Math.min(at + 1, buttons.length - 1)].focus();
  } else if (ev.key === "ArrowUp" && at >= 0) {
    ev.preventDefault();
    (at === 0 ? $("search-input") : buttons[at - 1]).focus();
  } else if (ev.key === "Escape") {
    $("search-results").replaceChildren();
    $("search-status").textContent = "";
    $("search-input").focus();
  }
}

// --- a movie ------------------------------------------------------------------------------

function showMovie(id, focus) {
  if (!state.user) { movie.id = id; return; } // opened once a user is picked
  openMovie(id, focus);
}

function navigateToMovie(id) {
  if (location.hash === `#movie/${enc(id)}`) showMovie(id, true);
  else location.hash = `movie/${enc(id)}`;
}

function route() {
  const m = location.hash.match(/^#movie\/(.+)$/);
  if (m) showMovie(decodeURIComponent(m[1]), true);
  else closeMovie(false);
}

async function submitRating(value) {
  if (!value) {
    actionStatus("Pick 1 to 5 stars first (arrow keys move between the stars).");
    return;
  }
  await write("ratings", { movie_id: movie.id, rating: value },
    `${value} ★ for ${movie.title}`);
}

async function write(kind, body, what) {
  const baseline = state.applied ?? 0;
  const movieId = movie.id;
  const buttons = [$("rate-submit"), $("watched")];
  buttons.forEach((b) => { b.disabled = true; });
  actionStatus(`Saving ${what}…`);
  try {
    await withKey(() => api(`/v1/users/${enc(state.user)}/${kind}`, { method: "POST", body }));
  } catch (err) {
    actionStatus(describeError(err));
    return;
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
  clearError();
  actionStatus(`Saved ${what}. Waiting for the stream to apply it…`);
  const seq = ++state.writeSeq;
  const started = performance.now();
  while (performance.now() - started < APPLY_TIMEOUT_MS) {
    await new Promise((r) => setTimeout(r, APPLY_POLL_MS));
    if (seq !== state.writeSeq) return; // a newer write took over the waiting
    const applied = await loadProfile();
    if (applied !== null && applied > baseline) {
      await Promise.all([loadRecs("live"), loadBecause()]);
      const secs = ((performance.now() - started) / 1000).toFixed(1);
      actionStatus(`Applied by the stream in ${secs} s. Your recommendations are updated.`,
        true);
      if (movie.id === movieId) loadPredicted(movieId);
      return;
    }
  }
  actionStatus(`Saved ${what}. The stream has not applied it yet; your recommendations ` +
    "will update as soon as it does.");
}

// --- start --------------------------------------------------------------------------------

function wire() {
  $("user-form").addEventListener("submit", onUserSubmit);
  $("switch-user").addEventListener("click", showWelcome);
  $("error-close").addEventListener("click", clearError);
  $("search-input").addEventListener("input", debounce(runSearch, 200));
  $("search-input").addEventListener("keydown", onSearchKeys);
  $("search-results").addEventListener("keydown", onSearchKeys);
  $("movie-close").addEventListener("click", () => closeMovie(true));
  window.addEventListener("hashchange", route);
  // without the live connection (it dropped, or the API wants a key for reads, which
  // EventSource cannot send) the page still refreshes now and then
  setInterval(() => {
    if (state.user && !document.hidden && $("live").dataset.live !== "on") refreshAll("live");
  }, FALLBACK_REFRESH_MS);

  const stars = $("stars");
  stars.addEventListener("change", () => setStars(checkedStars()));
  // a click on a star saves at once; keyboard users pick with the arrows (which fire click
  // events on the radios, not the labels) and press Enter or "Save rating"
  stars.addEventListener("click", (ev) => {
    const label = ev.target.closest("label");
    if (!label || ev.detail === 0) return;
    const value = Number(label.htmlFor.split("-")[1]);
    setStars(value);
    submitRating(value);
  });
  for (const label of stars.querySelectorAll("label")) {
    const value = Number(label.htmlFor.split("-")[1]);
    label.addEventListener("mouseenter", () => setStars(value, { check: false }));
    label.addEventListener("mouseleave", () => setStars(checkedStars(), { check: false }));
  }
  $("rate-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    submitRating(checkedStars());
  });
  $("watched").addEventListener("click", () =>
    write("watches", { movie_id: movie.id, completion: 1.0 }, `${movie.title} as watched`));
}

function start() {
  initMovie({ read, user: () => state.user, navigate: navigateToMovie, showError });
  wire();
  for (const chip of $("surfaces").querySelectorAll(".chip")) {
    chip.addEventListener("click", () => chooseSurface(chip.dataset.surface));
  }
  loadGenres();
  const m = location.hash.match(/^#movie\/(.+)$/);
  if (m) movie.id = decodeURIComponent(m[1]);
  const user = store.get(USER_STORE);
  if (user) enterApp(user);
  else showWelcome();
}

start();

/** The scroll buttons of a row: each moves it by most of its width; off at either end. */
function updateRowNav(list) {
  const end = list.scrollWidth - list.clientWidth - 2;
  for (const b of document.querySelectorAll(`.row-scroll[aria-controls="${list.id}"]`)) {
    b.disabled = Number(b.dataset.dir) < 0 ? list.scrollLeft <= 2 : list.scrollLeft >= end;
  }
}

for (const button of document.querySelectorAll(".row-scroll")) {
  const list = document.getElementById(button.getAttribute("aria-controls"));
  button.addEventListener("click", () => list.scrollBy({
    left: Number(button.dataset.dir) * list.clientWidth * 0.9, behavior: "smooth" }));
  list.addEventListener("scroll", () => updateRowNav(list), { passive: true });
}
