// Small DOM helpers shared by the people page's modules.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) node.append(c);
  }
  return node;
}

export const capitalize = (s) => (s ? s.charAt(0).toUpperCase() + s.slice(1) : s);
export const clock = () => new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit",
  second: "2-digit" });

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

export function hue(text) {
  let h = 0;
  for (const ch of text) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

export function poster(title, year) {
  const h = hue(title);
  const node = el("div", { class: "poster", "aria-hidden": "true" }, year ? String(year) : "");
  node.style.background = `linear-gradient(160deg, hsl(${h} 55% 45%), hsl(${(h + 50) % 360} 60% 22%))`;
  return node;
}
