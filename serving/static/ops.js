// The operator page (/ops): polls GET /v1/admin/metrics every 2 s (the Prometheus samples of
// the API and of RECSYS_API_METRICS_TARGETS, merged) and computes rates and latency
// percentiles from successive scrapes, as Grafana's rate() and histogram_quantile() would;
// every 10 s it also reads /v1/admin/model, /v1/admin/lag and /readyz.

import { api, askForKey, describeError } from "./api.js";
import { LineChart, PALETTE, renderLegend } from "./charts.js";
import { increased, index, keyOf, named, quantiles, rates, total } from "./samples.js";

const POLL_MS = 2000;
const SLOW_EVERY = 5; // admin model, lag and readiness every 5th poll
const WINDOW_S = 300; // what the charts show
const LATENCY_WINDOW_S = 10; // percentiles over the last 10 s of requests
const SSE_ROUTE = "/v1/users/{user_id}/updates"; // long-lived: not a latency
const userRoute = (l) => /^\/v1\//.test(l.route || "") && !/^\/v1\/admin\//.test(l.route)
  && l.route !== SSE_ROUTE;
const adminRoute = (l) => /^\/v1\/admin\//.test(l.route || "");
// "recsys_live_hr_at_10" → "live HR@10"
const hrLabel = (name) => name.replace(/^recsys_/, "").replace(/_hr_at_10|_hit_rate/, " HR@10")
  .replace(/_/g, " ");
const LIVE_HR = /^recsys_\w*live_(hr_at_10|hit_rate)\w*$/;
const HR_KEY = "holdout_hr@10";
const NDCG_KEY = "holdout_ndcg@10";

const $ = (id) => document.getElementById(id);

// --- formatting ---------------------------------------------------------------------------

const intFmt = new Intl.NumberFormat("en");
const fmtInt = (v) => (v === null || v === undefined ? "–" : intFmt.format(Math.round(v)));
function fmtRate(v) {
  if (v === null || v === undefined) return "–";
  if (v >= 1000) return `${(v / 1000).toFixed(1)}k/s`;
  if (v >= 100) return `${v.toFixed(0)}/s`;
  if (v >= 10) return `${v.toFixed(1)}/s`;
  return `${v.toFixed(2)}/s`;
}
function fmtMs(v) {
  if (v === null || v === undefined) return "–";
  return v >= 100 ? `${v.toFixed(0)} ms` : v >= 10 ? `${v.toFixed(1)} ms` : `${v.toFixed(2)} ms`;
}
function fmtAge(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, seconds);
  if (s < 1) return "just now";
  if (s < 90) return `${s.toFixed(0)} s ago`;
  if (s < 5400) return `${(s / 60).toFixed(0)} min ago`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h ago`;
  return `${(s / 86400).toFixed(0)} days ago`;
}
const fmtTime = (unix) => new Date(unix * 1000).toLocaleString([], { dateStyle: "short",
  timeStyle: "short" });
const fmtMetric = (v) => (typeof v === "number" ? v.toFixed(3) : "–");

// --- charts -------------------------------------------------------------------------------

const charts = new Map();

function chart(id, format) {
  if (!charts.has(id)) {
    charts.set(id, {
      chart: new LineChart($(`c-${id}`), { format, windowSeconds: WINDOW_S,
        integer: format === fmtInt }),
      legend: $(`l-${id}`),
      title: $(`c-${id}-title`).textContent,
      format,
      series: new Map(),
    });
  }
  return charts.get(id);
}

/** Add this scrape's values (label -> number | null) to a chart and redraw it. */
function plot(id, t, values, format) {
  const c = chart(id, format);
  for (const [label, s] of c.series) {
    if (!values.has(label)) s.points.push([t, null]);
  }
  for (const [label, v] of values) {
    if (!c.series.has(label)) {
      c.series.set(label, { label, color: PALETTE[c.series.size % PALETTE.length], points: [] });
    }
    c.series.get(label).points.push([t, v]);
  }
  for (const s of c.series.values()) {
    while (s.points.length && s.points[0][0] < t - WINDOW_S - 10) s.points.shift();
  }
  const series = [...c.series.values()].filter((s) => s.points.some(([, v]) => v !== null));
  c.chart.update(series, t);
  renderLegend(c.legend, c.chart.canvas, c.title, series, format);
}

// --- page state ---------------------------------------------------------------------------

const state = {
  prev: null, // {t, samples}
  snaps: [], // [{t, samples}] of the last ~30 s, for latency windows
  lastApplied: null, // when the applied counter last went up (scrape time)
  deadSeen: new Map(), // dead-letter key -> when it last went up
  polls: 0,
  paused: false,
  timer: null,
  admin: null, // /v1/admin/model
  lag: null, // /v1/admin/lag
  ready: null, // /readyz
  clockSkew: 0, // server time - browser time
};

function kpi(id, value, sub, level = "") {
  const node = $(id);
  node.querySelector(".k-value").textContent = value;
  if (sub !== undefined) node.querySelector(".k-sub").textContent = sub;
  node.className = `kpi${level ? ` ${level}` : ""}`;
  return node;
}

const shortTopic = (topic) => topic.split(".").slice(-2).join(".");
const inputTopic = (labels) => !/__/.test(labels.topic || "");
const statusClass = (labels) => `${String(labels.status || "?").charAt(0)}xx`;

function onScrape(body) {
  const t = body.scraped_at;
  state.clockSkew = t - Date.now() / 1000;
  const cur = index(body.samples);
  const prev = state.prev;
  const dt = prev ? t - prev.t : 0;
  renderTargets(body.targets);

  // stream events
  const events = rates(cur, prev && prev.samples, dt, "recsys_stream_events_total",
    (l) => `${l.type} ${l.outcome}`);
  if (prev) plot("events", t, events, fmtRate);
  const applied = total(cur, "recsys_stream_events_total", (l) => l.outcome === "applied");
  const appliedKey = named(cur, "recsys_stream_events_total")
    .filter((s) => s.labels.outcome === "applied")
    .some((s) => increased(cur, prev && prev.samples, keyOf(s.name, s.labels)));
  if (prev && appliedKey) state.lastApplied = t;
  const byType = named(cur, "recsys_stream_events_total")
    .filter((s) => s.labels.outcome === "applied")
    .map((s) => `${s.labels.type} ${fmtInt(s.value)}`).join(" · ");
  const appliedNode = kpi("kpi-applied", fmtInt(applied), byType || "none yet");
  appliedNode.querySelector(".k-value").dataset.value = String(applied);
  const evTotal = [...events.values()].reduce((a, v) => a + v, 0);
  const evApplied = [...events.entries()].filter(([k]) => k.endsWith(" applied"))
    .reduce((a, [, v]) => a + v, 0);
  kpi("kpi-events", prev ? fmtRate(evTotal) : "–",
    evTotal > 0 ? `${Math.round((100 * evApplied) / evTotal)}% applied` : "consumed by the workers");

  // consumer lag
  const lagSamples = named(cur, "recsys_stream_consumer_lag").filter((s) => inputTopic(s.labels));
  const lag = new Map(lagSamples.map((s) =>
    [`${shortTopic(s.labels.topic)}:${s.labels.partition}`, s.value]));
  plot("lag", t, lag, fmtInt);
  const lagTotal = lagSamples.reduce((a, s) => a + s.value, 0);
  const lagMax = lagSamples.reduce((a, s) => Math.max(a, s.value), 0);
  kpi("kpi-lag", lagSamples.length ? fmtInt(lagTotal) : "–",
    lagSamples.length ? `${lagSamples.length} partitions · max ${fmtInt(lagMax)}`
      : "no worker reports lag", lagTotal > 10000 ? "bad" : lagTotal > 1000 ? "warn" : "");

  // dead letters
  const deadName = "recsys_stream_dead_letters_total";
  for (const s of named(cur, deadName)) {
    const key = keyOf(s.name, s.labels);
    if (prev && increased(cur, prev.samples, key)) state.deadSeen.set(key, t);
  }
  const dead = rates(cur, prev && prev.samples, dt, deadName, (l) => `${l.type} ${l.reason}`);
  const deadAll = [...dead.values()].reduce((a, v) => a + v, 0);
  if (prev) plot("dead", t, new Map([["all reasons", deadAll], ...dead]), fmtRate);
  renderDeadLetters(named(cur, deadName), t);

  // API requests and latency
  const reqs = rates(cur, prev && prev.samples, dt, "recsys_api_request_seconds_count",
    statusClass);
  if (prev) plot("req", t, reqs, fmtRate);
  state.snaps.push({ t, samples: cur });
  while (state.snaps.length > 2 && state.snaps[1].t <= t - LATENCY_WINDOW_S) state.snaps.shift();
  const old = state.snaps.length > 1 ? state.snaps[0] : null;
  // what users wait for: the /v1 routes but admin (this page's own polls) and the SSE stream;
  // the admin routes are charted apart
  const ms = (v) => (v === null ? null : v * 1000);
  const [p50, p95, p99] = old
    ? quantiles(cur, old.samples, "recsys_api_request_seconds_bucket", userRoute,
      [0.5, 0.95, 0.99]).map(ms)
    : [null, null, null];
  const [adminP95] = old
    ? quantiles(cur, old.samples, "recsys_api_request_seconds_bucket", adminRoute, [0.95]).map(ms)
    : [null];
  if (old) {
    plot("lat", t, new Map([["p50", p50], ["p95", p95], ["p99", p99],
      ["admin p95 (apart)", adminP95]]), fmtMs);
  }
  const reqTotal = [...reqs.values()].reduce((a, v) => a + v, 0);
  const errors = (reqs.get("5xx") || 0);
  kpi("kpi-api", prev ? fmtRate(reqTotal) : "–", `user routes p95 ${fmtMs(p95)} · p99 ${fmtMs(p99)}`,
    errors > 0 ? "bad" : "");

  // personalisation: vectors and fallbacks
  const vectors = rates(cur, prev && prev.samples, dt, "recsys_stream_vector_updates_total",
    () => "vectors recomputed");
  const fallbacks = rates(cur, prev && prev.samples, dt, "recsys_api_fallbacks_total",
    (l) => `fallback ${l.reason}`);
  if (prev) plot("pers", t, new Map([...vectors, ...fallbacks]), fmtRate);

  // live HR@10: events for a movie in the user's last served top-10, of all events of
  // users served one in the last hour (counted by the stream workers)
  const sumOf = (name) => [...cur.values()].filter((s) => s.name === name)
    .reduce((a, s) => a + s.value, 0);
  const servedEvents = sumOf("recsys_stream_served_events_total");
  const hr = [...cur.values()].filter((s) => LIVE_HR.test(s.name));
  if (servedEvents > 0) {
    hr.push({ name: "recsys_live_hr_at_10", labels: {},
      value: sumOf("recsys_stream_served_hits_total") / servedEvents, n: servedEvents });
  }
  $("hr-panel").hidden = hr.length === 0;
  if (hr.length) {
    plot("hr", t, new Map(hr.map((s) => [hrLabel(s.name), s.value])), (v) => v.toFixed(3));
    const best = hr.find((s) => s.n !== undefined) || hr[0];
    kpi("kpi-hr", best.value.toFixed(3), best.n !== undefined
      ? `of ${fmtInt(best.n)} events of served users` : hrLabel(best.name));
  } else {
    kpi("kpi-hr", "–", "no role reports it yet");
  }

  state.prev = { t, samples: cur };
  state.batchP95 = old ? quantiles(cur, old.samples, "recsys_stream_batch_seconds_bucket",
    () => true, [0.95])[0] : null;
  renderFreshness(cur, t);
}

function renderDeadLetters(samples, t) {
  const rows = samples.filter((s) => s.value > 0).map((s) => ({
    type: s.labels.type, reason: s.labels.reason, total: s.value,
    seen: state.deadSeen.get(keyOf(s.name, s.labels)) || null,
  })).sort((a, b) => (b.seen || 0) - (a.seen || 0) || b.total - a.total);
  const body = $("dead-table").querySelector("tbody");
  if (!rows.length) {
    body.replaceChildren(row(["No dead letters"], "empty", 4));
  } else {
    body.replaceChildren(...rows.slice(0, 8).map((r) => row([r.type, r.reason, fmtInt(r.total),
      r.seen ? fmtAge(t - r.seen) : "before this page opened"])));
  }
  const all = rows.reduce((a, r) => a + r.total, 0);
  kpi("kpi-dead", fmtInt(all), rows.length ? `latest: ${rows[0].reason} (${rows[0].type})`
    : "none", rows.some((r) => r.seen && t - r.seen < 60) ? "warn" : "");
}

function row(cells, cls = "", span = 0) {
  const tr = document.createElement("tr");
  if (cls) tr.className = cls;
  cells.forEach((c, i) => {
    const td = document.createElement("td");
    if (span) td.colSpan = span;
    if (c instanceof Node) td.append(c);
    else td.textContent = c;
    if (!span && i === 2 && cells.length === 4) td.className = "num";
    tr.append(td);
  });
  return tr;
}

function pill(text, level = "") {
  const span = document.createElement("span");
  span.className = `pill${level ? ` ${level}` : ""}`;
  span.textContent = text;
  return span;
}

function renderTargets(targets) {
  const body = $("targets-table").querySelector("tbody");
  body.replaceChildren(...targets.map((tg) => {
    const cell = document.createElement("span");
    cell.append(pill(tg.up ? "up" : "down", tg.up ? "good" : "bad"));
    if (!tg.up && tg.error) cell.append(` ${tg.error}`);
    return row([tg.url === "self" ? "this API" : tg.url, cell]);
  }));
}

function fact(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  if (value instanceof Node) dd.append(value);
  else dd.textContent = value;
  list.push(dt, dd);
}

function renderFreshness(cur, t) {
  const facts = [];
  const since = state.lastApplied !== null ? t - state.lastApplied : null;
  fact(facts, "Last event applied", state.lastApplied !== null ? fmtAge(since)
    : "none since this page opened");
  kpi("kpi-fresh", state.lastApplied !== null ? fmtAge(since) : "–",
    state.lastApplied !== null ? "stream → Redis" : "none since this page opened");
  if (state.lag) {
    fact(facts, "Lag reported by the workers", state.lag.reported_at
      ? `${fmtAge(t - state.lag.reported_at)} (total ${fmtInt(state.lag.total)})` : "never");
  }
  const loaded = total(cur, "recsys_api_model_loaded_timestamp_seconds");
  fact(facts, "API loaded its model", loaded ? fmtAge(t - loaded) : "not yet");
  const current = state.admin && state.admin.versions.find((v) => v.current);
  const published = current && current.created_at ? Date.parse(current.created_at) / 1000 : null;
  fact(facts, "Last publish", published ? `${fmtAge(t - published)} (version ${current.version})`
    : "–");
  fact(facts, "Stream batch time p95", state.batchP95 !== null && state.batchP95 !== undefined
    ? fmtMs(state.batchP95 * 1000) : "no batches in the last 10 s");
  const versions = [
    ["trainer", named(cur, "recsys_trainer_published_version")],
    ["API", named(cur, "recsys_api_model_version")],
    ["stream", named(cur, "recsys_stream_model_version")],
  ].map(([who, s]) => `${who} ${s.length ? `v${s[0].value}` : "–"}`).join(" · ");
  fact(facts, "Model versions", versions);
  if (state.ready) {
    const span = document.createElement("span");
    for (const [name, check] of Object.entries(state.ready.checks || {})) {
      if (check && typeof check === "object") span.append(pill(name, check.ok ? "good" : "bad"));
    }
    fact(facts, "Ready", span);
  }
  $("fresh").replaceChildren(...facts);

  const served = state.admin ? state.admin.served_version : total(cur, "recsys_api_model_version");
  kpi("kpi-model", served ? `v${served}` : "–",
    published ? `published ${fmtAge(t - published)}` : "–");
}

function renderModels(admin) {
  const body = $("models-table").querySelector("tbody");
  if (!admin.versions.length) {
    body.replaceChildren(row(["No version published yet"], "empty", 7));
  } else {
    body.replaceChildren(...admin.versions.map((v) => {
      const tr = document.createElement("tr");
      const states = document.createElement("span");
      if (v.current) states.append(pill("current", "good"));
      if (v.version === admin.served_version) states.append(pill("served"));
      if (!v.current && v.version !== admin.served_version) states.append(pill("kept"));
      const gate = v.gate
        ? pill(v.gate.passed ? "passed" : v.gate.forced ? "forced" : "refused",
          v.gate.passed ? "good" : "warn")
        : document.createTextNode("–");
      if (v.gate && v.gate.reason) gate.title = v.gate.reason;
      const created = v.created_at ? Date.parse(v.created_at) / 1000 : null;
      const cells = [`v${v.version}`, states, created ? fmtTime(created) : "–",
        fmtMetric(v.metrics[HR_KEY]), fmtMetric(v.metrics[NDCG_KEY]),
        v.data_window ? fmtInt(v.data_window.interactions) : "–", gate];
      cells.forEach((c, i) => {
        const td = document.createElement("td");
        if (c instanceof Node) td.append(c);
        else td.textContent = c;
        if (i >= 3 && i <= 5) td.className = "num";
        tr.append(td);
      });
      return tr;
    }));
  }
  const w = admin.blend_weights;
  $("models-status").textContent = w
    ? `Blend: ${Object.entries(w).filter(([, x]) => typeof x === "number")
      .map(([k, x]) => `${k} ${x}`).join(", ")}`
    : "";
}

// --- polling ------------------------------------------------------------------------------

function setScrape(kind, text) {
  const node = $("scrape-status");
  node.dataset.state = kind;
  node.textContent = text;
}

function showError(err, needsKey = false) {
  $("error-text").textContent = describeError(err);
  $("error-action").hidden = !needsKey;
  $("error").hidden = false;
}

function clearError() { $("error").hidden = true; }

async function slowPoll() {
  const [admin, lag, ready] = await Promise.allSettled([
    api("/v1/admin/model"), api("/v1/admin/lag"), api("/readyz")]);
  if (admin.status === "fulfilled") { state.admin = admin.value; renderModels(admin.value); }
  if (lag.status === "fulfilled") state.lag = lag.value;
  if (ready.status === "fulfilled") state.ready = ready.value;
  else if (ready.reason && ready.reason.status === 503) state.ready = null;
}

async function poll() {
  state.timer = null;
  const started = performance.now();
  try {
    if (state.polls % SLOW_EVERY === 0) await slowPoll();
    const body = await api("/v1/admin/metrics");
    state.polls += 1;
    onScrape(body);
    clearError();
    const down = body.targets.filter((tg) => !tg.up).length;
    setScrape("live", `Live · scraped ${new Date(body.scraped_at * 1000).toLocaleTimeString()}` +
      ` in ${Math.round(performance.now() - started)} ms` +
      (down ? ` · ${down} target${down > 1 ? "s" : ""} down` : ""));
  } catch (err) {
    if (err.needsKey) {
      state.paused = true;
      setScrape("error", "Paused: API key needed");
      showError(err, true);
      return;
    }
    setScrape("error", "Scrape failed; retrying");
    showError(err);
  }
  if (!state.paused) state.timer = setTimeout(poll, POLL_MS);
}

async function enterKey(reason) {
  const ok = await askForKey(reason);
  if (ok && state.paused) {
    state.paused = false;
    clearError();
    poll();
  }
}

$("key-button").addEventListener("click", () => enterKey("The admin key of this deployment " +
  "(RECSYS_API_ADMIN_KEY, or RECSYS_API_KEY)."));
$("error-action").addEventListener("click", () => enterKey($("error-text").textContent));
poll();
