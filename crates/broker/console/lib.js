// Small helpers shared by the console's views: requests to this broker only, DOM
// building, number formatting, record decoding and SVG charts. No dependencies.

/** A refusal from the admin API, with the API's own message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls the admin API on this origin; resolves to the JSON body or throws ApiError. */
export async function api(path, { method = 'GET', body } = {}) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `broker unreachable: ${e.message}`);
  }
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON (e.g. /metrics) */ }
  if (!r.ok) throw new ApiError(r.status, (json && json.error) || `${r.status} ${r.statusText}`);
  return json ?? text;
}

/** What a failed request shows: 401 and 403 get a "not authorized" state that says
 * who decides (the broker's users and ACLs), anything else the API's message. */
export function refusal(e) {
  const status = e && e.status;
  if (status === 401) {
    return h('div.error.denied', { role: 'alert', 'data-status': 401 },
      h('b', 'Not signed in. '), 'The server asks for a user and password (HTTP Basic) or a token: ',
      'reload the page to sign in. ', h('span.muted', e.message));
  }
  if (status === 403) {
    return h('div.error.denied', { role: 'alert', 'data-status': 403 },
      h('b', 'Not authorized. '), 'The broker\'s ACLs do not allow this to the user you signed in as: ',
      h('span.mono', e.message));
  }
  return h('div.error', { role: 'alert' }, (e && e.message) || String(e));
}

/** `h('div.card', {onclick}, child, ...)`: an element with classes, attributes, children. */
export function h(tag, attrs, ...children) {
  const [name, ...classes] = tag.split('.');
  const el = document.createElement(name || 'div');
  if (classes.length) el.className = classes.join(' ');
  const isAttrs = attrs !== null && typeof attrs === 'object' && !(attrs instanceof Node) && !Array.isArray(attrs);
  if (!isAttrs) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces `el`'s children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// ------------------------------------------------------------------- view pieces

export function errorBox(el, e) {
  fill(el, e ? refusal(e) : null);
}

export function noteBox(el, text) {
  fill(el, h('div.note', { role: 'status' }, text));
}

export function card(k, v, cls = '', small = false) {
  return h(`div.card${cls ? `.${cls}` : ''}`, h('div.k', k), h(`div.v${small ? '.small' : ''}`, v));
}

/** Runs `f` for a button press: disables the button meanwhile, shows a refusal in `out`. */
export async function act(button, out, f) {
  button.disabled = true;
  errorBox(out, null);
  try {
    await f();
  } catch (e) {
    errorBox(out, e);
  } finally {
    button.disabled = false;
  }
}

export function table(headers, rows, empty = 'nothing yet') {
  return h('table', h('thead', h('tr', headers.map((c) => h('th', c)))),
    h('tbody', rows.length ? rows.map((r) => h('tr', r.map((c) => h('td', c))))
      : h('tr', h('td.muted', { colspan: headers.length }, empty))));
}

export function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function num(n) {
  return n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US');
}

export function rate(n, unit = '/s') {
  if (!Number.isFinite(n)) return '–';
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M${unit}`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k${unit}`;
  return `${n.toFixed(n < 10 && n > 0 ? 1 : 0)}${unit}`;
}

export function duration(ms) {
  const n = Number(ms);
  if (!Number.isFinite(n) || n < 0) return String(ms);
  for (const [u, d] of [['d', 86400000], ['h', 3600000], ['min', 60000], ['s', 1000]]) {
    if (n >= d && n % d === 0) return `${n / d} ${u}`;
  }
  return `${n} ms`;
}

export function time(ms) {
  const d = new Date(ms);
  const pad = (v, w = 2) => String(v).padStart(w, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
    + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function badge(text, kind = '') {
  return h(`span.badge${kind ? `.${kind}` : ''}`, text);
}

// ------------------------------------------------------------------ record payloads

/** Bytes of a base64 field (null stays null). */
export function unbase64(s) {
  if (s === null || s === undefined) return null;
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i += 1) out[i] = bin.charCodeAt(i);
  return out;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Text of `b`, or null when it is not UTF-8. */
export function asText(b) {
  try { return utf8.decode(b); } catch { return null; }
}

export function asHex(b) {
  const parts = [];
  for (let i = 0; i < b.length; i += 1) parts.push(b[i].toString(16).padStart(2, '0'));
  return parts.join(' ');
}

/** `b` shown as `format` (auto: JSON when it parses, else text, else hex). */
export function render(b, format) {
  if (b === null) return { text: 'null', kind: 'null' };
  const text = asText(b);
  if (format === 'hex' || text === null) return { text: asHex(b), kind: 'hex' };
  if (format === 'json' || format === 'auto') {
    try {
      const v = JSON.parse(text);
      if (typeof v === 'object' && v !== null) return { text: JSON.stringify(v, null, 2), kind: 'json' };
    } catch { /* not JSON */ }
    if (format === 'json') return { text, kind: 'text' };
  }
  return { text, kind: 'text' };
}

// -------------------------------------------------------------------------- charts

// A namespace name, never fetched.
const SVG_NS = 'http://www.w3.org/2000/svg';

/** An SVG sparkline of `values` (oldest first); the last value is marked. */
export function sparkline(values, { width = 220, height = 44, label = '', stretch = false } = {}) {
  const ns = SVG_NS;
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('width', width);
  svg.setAttribute('height', height);
  svg.setAttribute('class', 'spark');
  // Stretched to its box's width (CSS), the line keeps its stroke.
  if (stretch) svg.setAttribute('preserveAspectRatio', 'none');
  if (label) svg.setAttribute('aria-label', label);
  const vs = values.filter(Number.isFinite);
  if (vs.length < 2) {
    const t = document.createElementNS(ns, 'text');
    t.setAttribute('x', 4);
    t.setAttribute('y', height / 2 + 4);
    t.textContent = 'collecting…';
    svg.append(t);
    return svg;
  }
  const max = Math.max(...vs, 1e-9);
  const step = width / (vs.length - 1);
  const pts = vs.map((v, i) => [i * step, height - 3 - (v / max) * (height - 8)]);
  const line = pts.map(([x, y], i) => `${i ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`).join('');
  const area = document.createElementNS(ns, 'path');
  area.setAttribute('d', `${line}L${width},${height}L0,${height}Z`);
  area.setAttribute('class', 'area');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', line);
  path.setAttribute('class', 'line');
  path.setAttribute('vector-effect', 'non-scaling-stroke');
  svg.append(area, path);
  return svg;
}

/** Parses Prometheus text into [{name, labels, value}]. */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[3] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c)); // the format's escapes
    }
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}
