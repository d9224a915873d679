// The movie panel of the people page: title, year, genres, people known by name, similar
// movies by taste and by content, the predicted rating, and the star radio group.

import { describeError } from "./api.js";
import { capitalize, el, poster } from "./dom.js";

/** The open movie (id null when none). */
export const movie = { id: null, title: "" };

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
// the API lists people known only by an opaque id (ml-100k: Freebase) under person_ids,
// never under people; this check stays for catalog events from older producers
const looksLikeId = (name) => /^\/?([mg]\.[0-9a-z_]+|nm\d{5,})$/i.test(name.trim());
let ctx = null;

/** read(path): GET with the API key; user(): the user id; navigate(id): open a movie;
 *  showError(err): the page's error banner. */
export function initMovie(context) { ctx = context; }

const PEOPLE_ROWS = [["director", "Directed by", 3], ["writer", "Written by", 3],
  ["actor", "Starring", 5]];

/** Show movie ``id`` (title, year, genres, people, similar movies, the predicted rating). */
export async function openMovie(id, focus) {
  movie.id = id;
  const section = $("movie");
  section.hidden = false;
  $("movie-title").textContent = "Loading…";
  $("movie-meta").textContent = "";
  $("movie-people").replaceChildren();
  $("movie-predicted").textContent = "";
  $("movie-status").textContent = "";
  $("movie-status").className = "status action-status";
  setStars(null);
  const [found, taste, content] = await Promise.allSettled([
    ctx.read(`/v1/movies/${enc(id)}`),
    ctx.read(`/v1/movies/${enc(id)}/similar?by=taste&k=6`),
    ctx.read(`/v1/movies/${enc(id)}/similar?by=content&k=6`),
  ]);
  if (movie.id !== id) return;
  if (found.status === "rejected") {
    ctx.showError(found.reason);
    closeMovie(true);
    return;
  }
  const m = found.value;
  movie.title = m.title;
  $("movie-title").textContent = m.title;
  $("movie-poster").replaceWith(Object.assign(poster(m.title, m.year), { id: "movie-poster" }));
  $("movie-meta").textContent = [m.year, (m.genres || []).join(", "),
    m.in_model ? null : "new in the catalogue"].filter(Boolean).join(" · ");
  const people = [];
  for (const [kind, label, most] of PEOPLE_ROWS) {
    const names = (m.people?.[kind] || []).filter((n) => !looksLikeId(n)).slice(0, most);
    if (names.length) people.push(el("dt", {}, label), el("dd", {}, names.join(", ")));
  }
  $("movie-people").replaceChildren(...people);
  renderSimilar("similar-taste", taste);
  renderSimilar("similar-content", content);
  loadPredicted(id);
  if (focus) {
    section.scrollIntoView({ block: "start", behavior: "smooth" });
    $("movie-title").focus({ preventScroll: true });
  }
}

function renderSimilar(listId, result) {
  const list = $(listId);
  if (result.status === "rejected") {
    list.replaceChildren(el("li", { class: "status" }, describeError(result.reason)));
    return;
  }
  const { items, by } = result.value;
  // by taste every reason reads "people who watched X also watched this": the heading says it
  const why = (it) => (by === "content" ? capitalize(it.reason) : (it.genres || []).join(", "));
  list.replaceChildren(...(items.length ? items.map((it) => el("li", {},
    el("button", { type: "button", onclick: () => ctx.navigate(it.movie_id) },
      el("span", { class: "title" }, it.title),
      el("span", { class: "why" }, why(it))))) :
    [el("li", { class: "status" }, "Nothing similar known yet.")]));
}

export async function loadPredicted(id) {
  try {
    const p = await ctx.read(`/v1/users/${enc(ctx.user())}/predicted-rating/${enc(id)}`);
    if (movie.id !== id) return;
    const stars = p.predicted_rating.toFixed(1);
    $("movie-predicted").textContent = p.your_rating !== null
      ? `You rated it ${p.your_rating} ★ · the model now predicts ${stars} ★`
      : p.fallback_reason === "cold_start"
        ? `Typical rating ${stars} ★ — rate a few movies for a personal guess`
        : `We think you would give it ${stars} ★`;
    if (p.your_rating !== null) setStars(Math.round(p.your_rating));
  } catch {
    $("movie-predicted").textContent = ""; // a movie only in the catalogue has no prediction
  }
}

export function closeMovie(updateHash) {
  movie.id = null;
  $("movie").hidden = true;
  if (updateHash && location.hash) {
    history.pushState(null, "", location.pathname + location.search);
  }
}

// --- stars, ratings and watches -----------------------------------------------------------

export function setStars(value, { check = true } = {}) {
  const inputs = document.querySelectorAll('#stars input[name="stars"]');
  for (const input of inputs) {
    if (check) input.checked = Number(input.value) === value;
    input.nextElementSibling.classList.toggle("on", value !== null && Number(input.value) <= value);
  }
  $("star-text").textContent = value ? `${value} of 5 stars` : "Not rated";
}

export function checkedStars() {
  const input = document.querySelector('#stars input[name="stars"]:checked');
  return input ? Number(input.value) : null;
}

export function actionStatus(text, ok = false) {
  const node = $("movie-status");
  node.textContent = text;
  node.className = `status action-status${ok ? " ok" : ""}`;
}
