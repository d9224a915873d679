// Small time-series line charts on <canvas>, no library: a few series over the last minutes,
// a zero-based y axis with round ticks, gaps where a value is missing, and an HTML legend with
// the latest values (which is also the chart's text for screen readers).

// Okabe–Ito: distinguishable with the common colour-vision deficiencies
export const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
  "#7A4EAB", "#5D6470", "#B8860B", "#1B7F79"];

function niceCeil(value) {
  if (!(value > 0)) return 1;
  const exp = Math.floor(Math.log10(value));
  const base = 10 ** exp;
  const f = value / base;
  const nice = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10;
  return nice * base;
}

export class LineChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{format?: (v: number) => string, windowSeconds?: number, height?: number,
   *          integer?: boolean}} opts
   */
  constructor(canvas, { format = String, windowSeconds = 300, height = 170,
    integer = false } = {}) {
    this.canvas = canvas;
    this.integer = integer;
    this.format = format;
    this.windowSeconds = windowSeconds;
    this.height = height;
    this.series = [];
    this.now = Date.now() / 1000;
    if ("ResizeObserver" in window) {
      new ResizeObserver(() => this.draw()).observe(canvas);
    }
  }

  /** series: [{label, color, points: [[unixSeconds, value | null], ...]}] */
  update(series, now) {
    this.series = series;
    this.now = now;
    this.draw();
  }

  draw() {
    const { canvas } = this;
    const width = canvas.clientWidth;
    if (!width) return;
    const dpr = window.devicePixelRatio || 1;
    canvas.style.height = `${this.height}px`;
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(this.height * dpr);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, this.height);
    ctx.font = "11px system-ui, sans-serif";

    // the window grows with the data, from 30 s up to windowSeconds
    const t1 = this.now;
    let first = t1;
    for (const s of this.series) if (s.points.length) first = Math.min(first, s.points[0][0]);
    const span = Math.min(this.windowSeconds, Math.max(30, t1 - first));
    const t0 = t1 - span;
    let max = 0;
    for (const s of this.series) {
      for (const [t, v] of s.points) if (t >= t0 && v !== null && v > max) max = v;
    }
    let top = niceCeil(max * 1.1);
    if (this.integer && top < 4) top = 4; // whole-number ticks: 0, 2, 4
    const ticks = [0, top / 2, top];
    const labels = ticks.map((v) => this.format(v));
    const left = Math.ceil(Math.max(...labels.map((l) => ctx.measureText(l).width))) + 10;
    const right = 8;
    const topPad = 8;
    const bottom = 20;
    const plotW = Math.max(10, width - left - right);
    const plotH = this.height - topPad - bottom;
    const x = (t) => left + ((t - t0) / (t1 - t0)) * plotW;
    const y = (v) => topPad + plotH - (v / top) * plotH;

    // grid and y labels
    ctx.strokeStyle = "#e3e5ec";
    ctx.fillStyle = "#4f5668";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    ticks.forEach((v, i) => {
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, yy);
      ctx.lineTo(left + plotW, yy);
      ctx.stroke();
      ctx.fillText(labels[i], left - 6, yy);
    });
    // x labels: time ago, at most six
    ctx.textAlign = "center";
    ctx.textBaseline = "alphabetic";
    const step = [10, 15, 30, 60, 120, 300, 600].find((st) => span / st <= 5) || 600;
    for (let ago = Math.floor(span / step) * step; ago >= 0; ago -= step) {
      const xx = x(t1 - ago);
      const text = ago === 0 ? "now" : ago % 60 === 0 ? `-${ago / 60}m` : `-${ago}s`;
      ctx.fillText(text, Math.min(Math.max(xx, left + 12), left + plotW - 12), this.height - 5);
    }

    let drawn = 0;
    for (const s of this.series) {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.lineJoin = "round";
      ctx.beginPath();
      let pen = false;
      let lone = null;
      let points = 0;
      for (const [t, v] of s.points) {
        if (t < t0 - 5 || v === null || !Number.isFinite(v)) {
          pen = false;
          continue;
        }
        if (pen) ctx.lineTo(x(t), y(v));
        else { ctx.moveTo(x(t), y(v)); lone = [x(t), y(v)]; }
        pen = true;
        points += 1;
      }
      ctx.stroke();
      drawn += points;
      if (points === 1 && lone) { // a single point: a dot, not an invisible line
        ctx.fillStyle = s.color;
        ctx.beginPath();
        ctx.arc(lone[0], lone[1], 2.5, 0, Math.PI * 2);
        ctx.fill();
      }
    }
    if (!drawn) {
      ctx.fillStyle = "#4f5668";
      ctx.textAlign = "center";
      ctx.font = "13px system-ui, sans-serif";
      ctx.fillText("waiting for data…", left + plotW / 2, topPad + plotH / 2);
    }
  }
}

/** The legend under a chart: one entry per series with its latest value; the same text is
 *  the canvas's accessible name. */
export function renderLegend(list, canvas, title, series, format) {
  const parts = [];
  list.replaceChildren(...series.map((s) => {
    const last = [...s.points].reverse().find(([, v]) => v !== null);
    const value = last ? format(last[1]) : "–";
    parts.push(`${s.label} ${value}`);
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = s.color;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = s.label;
    const val = document.createElement("b");
    val.textContent = value;
    li.append(swatch, label, " ", val);
    return li;
  }));
  canvas.setAttribute("aria-label",
    `${title}: ${parts.length ? parts.join("; ") : "no data yet"}`);
}
