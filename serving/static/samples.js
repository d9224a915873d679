// Prometheus samples as /v1/admin/metrics returns them ({name, labels, value}), and what the
// operator page computes from two scrapes: rate() of counters and histogram_quantile().

export function keyOf(name, labels) {
  return `${name}${JSON.stringify(Object.entries(labels).sort())}`;
}

export function index(samples) {
  const out = new Map();
  for (const s of samples) out.set(keyOf(s.name, s.labels), s);
  return out;
}

export function named(samples, name) {
  const out = [];
  for (const s of samples.values()) if (s.name === name) out.push(s);
  return out;
}

export function total(samples, name, keep = () => true) {
  return named(samples, name).filter((s) => keep(s.labels)).reduce((a, s) => a + s.value, 0);
}

/** Per-second increase of counter ``name`` since ``old``, summed by ``group(labels)``
 *  (a counter that went down restarted: its whole value is the increase). */
export function rates(cur, old, dt, name, group, keep = () => true) {
  const out = new Map();
  if (!old || !(dt > 0)) return out;
  for (const s of named(cur, name)) {
    if (!keep(s.labels)) continue;
    const before = old.get(keyOf(s.name, s.labels));
    const prevValue = before ? before.value : 0;
    const inc = s.value >= prevValue ? s.value - prevValue : s.value;
    const g = group(s.labels);
    out.set(g, (out.get(g) || 0) + inc / dt);
  }
  return out;
}

export function increased(cur, old, key) {
  const now = cur.get(key);
  if (!now) return false;
  const before = old && old.get(key);
  return now.value > (before ? before.value : 0);
}

/** histogram_quantile() over the increase of ``name``'s buckets between two scrapes. */
export function quantiles(cur, old, name, keep, qs) {
  const byLe = new Map();
  for (const s of named(cur, name)) {
    if (!keep(s.labels)) continue;
    const { le } = s.labels;
    const before = old && old.get(keyOf(s.name, s.labels));
    const inc = Math.max(0, s.value - (before ? before.value : 0));
    const bound = le === "+Inf" ? Infinity : Number(le);
    byLe.set(bound, (byLe.get(bound) || 0) + inc);
  }
  const buckets = [...byLe.entries()].sort((a, b) => a[0] - b[0]);
  const count = buckets.length ? buckets[buckets.length - 1][1] : 0;
  return qs.map((q) => {
    if (!(count > 0)) return null;
    const rank = q * count;
    let lowBound = 0;
    let lowCount = 0;
    for (const [bound, cum] of buckets) {
      if (cum >= rank) {
        if (bound === Infinity) return lowBound; // above the largest bucket: its bound
        if (cum === lowCount) return bound;
        return lowBound + (bound - lowBound) * ((rank - lowCount) / (cum - lowCount));
      }
      lowBound = bound;
      lowCount = cum;
    }
    return lowBound;
  });
}
