// The console's shell: hash routes (every view has a URL; back and forward work), one
// poll loop that refreshes the visible view, and the metric history behind the charts.

import { api, parseMetrics, refusal } from './lib.js';
import { views } from './views.js';

const POLL_MS = 2000;
/** Samples kept for the charts (2 minutes at the poll interval). */
const HISTORY = 60;

/** Shared state the views read: metric samples and each group's lag over time, and
 * which server this is: a broker (`/v1/...`) or `runnel sql --http` (`/progress`). */
export const store = {
  mode: 'broker',
  samples: [], // [{t, bytesIn, recordsIn, bytesOut, gauges}]
  lag: new Map(), // group id -> [{t, lag}]
};

export function noteLag(group, lag) {
  const h = store.lag.get(group) || [];
  h.push({ t: Date.now(), lag });
  if (h.length > HISTORY) h.shift();
  store.lag.set(group, h);
}

/** Per-second rates between consecutive samples (computed here, not by the broker). */
export function rates(key) {
  const s = store.samples;
  const out = [];
  for (let i = 1; i < s.length; i += 1) {
    const dt = (s[i].t - s[i - 1].t) / 1000;
    out.push(dt > 0 ? Math.max(0, s[i][key] - s[i - 1][key]) / dt : 0);
  }
  return out;
}

async function sampleMetrics() {
  const text = await api('/metrics');
  const sample = { t: Date.now(), bytesIn: 0, recordsIn: 0, bytesOut: 0, gauges: {}, dirs: {} };
  for (const m of parseMetrics(text)) {
    if (m.name === 'runnel_topic_bytes_in_total') sample.bytesIn += m.value;
    else if (m.name === 'runnel_topic_records_in_total') sample.recordsIn += m.value;
    else if (m.name === 'runnel_topic_bytes_out_total') sample.bytesOut += m.value;
    else if (m.name === 'runnel_log_dir_offline') sample.dirs[m.labels.log_dir] = m.value;
    else if (!Object.keys(m.labels).length) sample.gauges[m.name] = m.value;
  }
  store.samples.push(sample);
  if (store.samples.length > HISTORY + 1) store.samples.shift();
}

/** `#/topics/x/messages?partition=0` -> {parts: ['topics', 'x', 'messages'], params}. */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [p, q] = raw.split('?');
  const parts = p.split('/').filter(Boolean).map(decodeURIComponent);
  const home = store.mode === 'sql' ? 'queries' : 'overview';
  return { parts: parts.length ? parts : [home], params: new URLSearchParams(q || '') };
}

/** A broker answers /v1/health; `runnel sql --http` answers /progress/last instead. */
async function detectMode() {
  try {
    await api('/v1/health');
    return 'broker';
  } catch {
    try {
      await api('/progress/last');
      return 'sql';
    } catch {
      return 'broker'; // neither answers: the broker views will say what is wrong
    }
  }
}

let current = null; // {refresh, key}
let refused = false; // the last view was refused (401 or 403)
let generation = 0;

async function route() {
  const { parts, params } = parseHash();
  const gen = ++generation;
  const root = document.getElementById('view');
  const view = views[parts[0]] || views.notFound;
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.view === (parts[0] === 'share-groups' ? 'groups' : parts[0]));
  }
  current = null;
  root.replaceChildren();
  try {
    const v = await view(root, parts.slice(1), params);
    if (gen === generation) {
      current = v;
      refused = false;
    }
    document.title = `${v?.title ? `${v.title} · ` : ''}Runnel console`;
  } catch (e) {
    if (gen === generation) {
      root.replaceChildren(refusal(e));
      // Not signed in or not authorized: the header says so until a view renders.
      if (e.status === 401 || e.status === 403) {
        refused = true;
        showFailure(e);
      }
    }
  }
  // A view has rendered (the browser test waits on it); the first time, note when, in ms
  // since navigation start: the page's load time.
  if (!document.body.dataset.firstRenderMs) document.body.dataset.firstRenderMs = Math.round(performance.now());
  root.dataset.ready = 'true';
}

/** The header's status line for a failed request. */
function showFailure(e) {
  const status = document.getElementById('status');
  status.textContent = { 0: 'broker unreachable', 401: 'not signed in', 403: 'not authorized' }[e.status] ?? `error: ${e.message}`;
  status.classList.add('bad');
}

async function tick() {
  const status = document.getElementById('status');
  if (refused) return; // nothing on the page to refresh; the header keeps saying why
  try {
    // A user the broker lets see the views but not /metrics still gets them refreshed.
    if (store.mode === 'broker') await sampleMetrics().catch(() => {});
    if (current && current.refresh) await current.refresh();
    const d = new Date();
    status.textContent = `live · updated ${d.toLocaleTimeString('en-GB')}`;
    status.classList.remove('bad');
  } catch (e) {
    showFailure(e);
  }
}

/** Navigates to `hash`, adding a history entry (back returns to where we were). */
export function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

window.addEventListener('hashchange', route);
// The first metrics sample (the overview's gauges) is fetched while the server is
// identified; on `runnel sql --http` it fails and is ignored.
Promise.all([detectMode(), sampleMetrics().catch(() => {})]).then(([mode]) => {
  store.mode = mode;
  for (const a of document.querySelectorAll('#nav a')) {
    a.hidden = mode === 'sql' && a.dataset.view !== 'queries';
  }
  route();
  setInterval(tick, POLL_MS);
});
