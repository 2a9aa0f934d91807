// The console's views. Each is `async (root, pathParts, params) => ({title, refresh})`:
// it builds its page in `root` and returns what the poll loop calls to keep it current.
// Every change is a call to the admin API, which runs it through the Kafka handlers;
// a refusal is shown as the API words it.

import {
  api, h, fill, table, errorBox, noteBox, card, act, bytes, num, rate, duration, time, badge, unbase64, render, sparkline,
} from './lib.js';
import { store, rates, noteLag, go } from './app.js';
import { acls, shareGroup, shareGroupsPanel, links } from './admin.js';

const enc = encodeURIComponent;

/** `k=v` lines into an object (blank lines and `#` comments skipped). */
function pairs(text, what) {
  const out = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const i = line.indexOf('=');
    if (i <= 0) throw new Error(`${what}: '${line}' is not key=value`);
    out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

// ------------------------------------------------------------------------- overview

async function overview(root) {
  const cards = h('div.cards');
  const charts = h('div.row');
  const brokers = h('div');
  const dirs = h('div');
  root.append(
    h('h1', 'Overview'),
    cards,
    h('div.panel', h('h2', 'Throughput (all topics, computed from /metrics)'), charts),
    h('div.row', h('div.panel', h('h2', 'Brokers and quorum'), brokers), h('div.panel', h('h2', 'Disk use per log dir'), dirs)),
  );
  async function refresh() {
    const [b, t] = await Promise.all([api('/v1/brokers'), api('/v1/topics')]);
    const last = store.samples[store.samples.length - 1] || { gauges: {}, dirs: {} };
    const g = last.gauges;
    const user = t.topics.filter((x) => !x.internal);
    const parts = user.reduce((n, x) => n + x.partition_count, 0);
    const under = g.runnel_under_replicated_partitions ?? 0;
    const offline = g.runnel_offline_partitions ?? 0;
    const live = b.brokers.filter((x) => !x.fenced).length;
    fill(cards,
      card('Cluster', b.cluster_id, '', true),
      card('Brokers alive', `${live} / ${b.brokers.length}`, live < b.brokers.length ? 'bad' : 'ok'),
      card('Controller', b.controller_id),
      card('Topics', num(user.length)),
      card('Partitions', num(parts)),
      card('Under-replicated', num(under), under ? 'bad' : 'ok'),
      card('Offline partitions', num(offline), offline ? 'bad' : 'ok'),
      card('Connections', num(g.runnel_connections_active)));
    const series = [
      ['Records in', rates('recordsIn'), (v) => rate(v, ' rec/s')],
      ['Bytes in', rates('bytesIn'), (v) => `${bytes(v)}/s`],
      ['Bytes out', rates('bytesOut'), (v) => `${bytes(v)}/s`],
    ];
    const span = store.samples.length > 1 ? Math.round((store.samples[store.samples.length - 1].t - store.samples[0].t) / 1000) : 0;
    fill(charts, series.map(([name, vs, f]) => h('div.metric.wide',
      h('div.muted', name), h('div.now', vs.length ? f(vs[vs.length - 1]) : '–'),
      sparkline(vs, { width: 320, height: 48, label: name, stretch: true }),
      h('div.muted.small', vs.length ? `peak ${f(Math.max(...vs))} over the last ${span} s` : ''))));
    const quorum = b.quorum;
    fill(brokers,
      table(['ID', 'Address', 'Rack', 'Role', 'Status'], b.brokers.map((x) => [
        h('b', x.node_id), h('span.mono', x.bootstrap), x.rack ?? h('span.muted', 'none'),
        x.node_id === b.controller_id ? badge('controller', 'info') : badge('broker'),
        x.fenced ? badge('fenced', 'bad') : badge('alive', 'ok'),
      ])),
      h('p.muted', !quorum
        ? 'Metadata quorum: not reported.'
        : quorum.voters.length === 1
          ? ['Single node: its own one-voter metadata quorum (voter ',
            h('span.mono', quorum.voters[0]), ')']
          : ['Metadata quorum: voters ', h('span.mono', quorum.voters.join(', ')),
            '; leader ', quorum.leader ?? 'none (election in progress)']),
      h('p.muted', 'Bootstrap: ', h('span.mono', b.bootstrap_servers)));
    const byDir = new Map();
    for (const topic of t.topics) {
      for (const p of topic.partitions) {
        const d = byDir.get(p.log_dir) || { size: 0, partitions: 0 };
        d.size += p.size_bytes;
        d.partitions += 1;
        byDir.set(p.log_dir, d);
      }
    }
    for (const d of Object.keys(last.dirs || {})) if (!byDir.has(d)) byDir.set(d, { size: 0, partitions: 0 });
    fill(dirs, table(['Log dir', 'Status', 'Partitions', 'Size'],
      [...byDir].map(([d, v]) => [h('span.mono', d),
        last.dirs?.[d] ? badge('offline', 'bad') : badge('online', 'ok'),
        h('span', num(v.partitions)), bytes(v.size)]), 'no partitions yet'));
  }
  await refresh();
  return { title: 'Overview', refresh };
}

// --------------------------------------------------------------------------- topics

async function topics(root) {
  const list = h('div');
  const showInternal = h('input', { type: 'checkbox', id: 'show-internal' });
  const out = h('div');
  const form = h('form.inline', { id: 'create-topic' },
    h('label', 'Name', h('input', { name: 'name', required: true, placeholder: 'orders', size: 22 })),
    h('label', 'Partitions', h('input', { name: 'partitions', type: 'number', min: 1, placeholder: 'default', class: 'narrow' })),
    h('label', 'Replication', h('input', { name: 'replication', type: 'number', min: 1, placeholder: 'default', class: 'narrow' })),
    h('label', 'Configs (key=value per line)', h('textarea', { name: 'configs', rows: 1, cols: 34, placeholder: 'retention.ms=86400000' })),
    h('button', { type: 'submit' }, 'Create topic'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    act(form.querySelector('button'), out, async () => {
      const body = { name: f.get('name').trim(), configs: pairs(f.get('configs'), 'configs') };
      if (f.get('partitions')) body.partitions = Number(f.get('partitions'));
      if (f.get('replication')) body.replication_factor = Number(f.get('replication'));
      const r = await api('/v1/topics', { method: 'POST', body });
      go(`#/topics/${enc(r.name)}`);
    });
  });
  root.append(h('h1', 'Topics'),
    h('div.panel', h('h2', 'Create a topic'), form, out),
    h('div.panel', h('div.title-row', h('h2', 'All topics'), h('span.spacer'),
      h('label.check', showInternal, 'show internal topics')), list));
  showInternal.addEventListener('change', () => refresh());
  let defaults = {};
  try {
    const c = await api('/v1/configs/broker');
    defaults = Object.fromEntries(c.configs.map((x) => [x.name, x.value]));
  } catch { /* retention then shows as "default" */ }
  async function refresh() {
    const t = await api(`/v1/topics?internal=${showInternal.checked}`);
    fill(list, table(['Name', 'Partitions', 'Replication', 'Size', 'Retention', 'Messages'],
      t.topics.map((x) => {
        const ms = x.configs['retention.ms'];
        const msgs = x.partitions.reduce((n, p) => n + (p.high_watermark - p.log_start_offset), 0);
        return [
          h('a', { href: `#/topics/${enc(x.name)}`, 'data-topic': x.name }, x.name),
          h('span', num(x.partition_count)), h('span', x.replication_factor), bytes(x.size_bytes),
          ms ? duration(ms) : h('span.muted', `${duration(defaults['log.retention.ms'] ?? 'default')} (default)`),
          h('span', num(msgs)),
        ];
      }), 'no topics yet: create one above'));
  }
  await refresh();
  return { title: 'Topics', refresh };
}

function topicHeader(root, name, tab) {
  root.append(
    h('div.crumbs', h('a', { href: '#/topics' }, 'Topics'), ' / ', name),
    h('div.title-row', h('h1', name)),
    h('nav.tabs',
      h('a', { href: `#/topics/${enc(name)}`, class: tab === 'partitions' ? 'active' : '' }, 'Partitions'),
      h('a', { href: `#/topics/${enc(name)}/configs`, class: tab === 'configs' ? 'active' : '' }, 'Configs'),
      h('a', { href: `#/topics/${enc(name)}/messages`, class: tab === 'messages' ? 'active' : '' }, 'Messages')));
}

async function topic(root, [name, tab], params) {
  if (tab === 'messages') return messages(root, name, params);
  if (tab === 'configs') return topicConfigs(root, name);
  topicHeader(root, name, 'partitions');
  const cards = h('div.cards');
  const parts = h('div');
  const out = h('div');
  const count = h('input', { type: 'number', min: 1, class: 'narrow', id: 'partition-count' });
  const add = h('button.secondary', { type: 'button' }, 'Set partition count');
  const del = h('button.danger', { type: 'button', id: 'delete-topic' }, 'Delete topic');
  add.addEventListener('click', () => act(add, out, async () => {
    await api(`/v1/topics/${enc(name)}/partitions`, { method: 'POST', body: { count: Number(count.value) } });
    noteBox(out, `${name} now has ${count.value} partitions`);
    await refresh();
  }));
  del.addEventListener('click', () => {
    if (!window.confirm(`Delete topic ${name} and all its records?`)) return;
    act(del, out, async () => {
      await api(`/v1/topics/${enc(name)}`, { method: 'DELETE' });
      go('#/topics');
    });
  });
  root.append(cards,
    h('div.panel', h('h2', 'Partitions'), parts),
    h('div.panel', h('h2', 'Change'), h('div.inline', h('label', 'New partition count', count), add, h('span.spacer'), del), out));
  let seeded = false;
  async function refresh() {
    const t = await api(`/v1/topics/${enc(name)}`);
    if (!seeded) { count.value = t.partition_count + 1; seeded = true; }
    const msgs = t.partitions.reduce((n, p) => n + (p.high_watermark - p.log_start_offset), 0);
    fill(cards, card('Partitions', num(t.partition_count)), card('Replication', t.replication_factor),
      card('Size', bytes(t.size_bytes)), card('Messages', num(msgs)), card('Topic ID', t.id, '', true));
    fill(parts, table(['#', 'Leader', 'Epoch', 'Replicas', 'ISR', 'Log start', 'High watermark', 'Log end', 'Size', 'Segments', 'Log dir'],
      t.partitions.map((p) => [h('b', p.partition),
        p.leader < 0 ? badge('offline', 'bad') : p.leader, p.leader_epoch, p.replicas.join(', '),
        p.isr.length < p.replicas.length ? badge(p.isr.join(', ') || 'empty', 'warn') : p.isr.join(', '),
        num(p.log_start_offset), num(p.high_watermark), num(p.log_end_offset),
        bytes(p.size_bytes), p.segments, h('span.mono', p.log_dir)])));
  }
  await refresh();
  return { title: name, refresh };
}

async function topicConfigs(root, name) {
  topicHeader(root, name, 'configs');
  const list = h('div');
  root.append(h('div.panel', h('h2', 'Configs'),
    h('p.muted', 'Edit a value and save: the broker validates it (IncrementalAlterConfigs) and a refusal shows here. Reset removes the topic override.'),
    list));
  let editing = 0;
  async function refresh() {
    if (editing) return; // keep an open edit as typed
    const c = await api(`/v1/configs/topics/${enc(name)}`);
    fill(list, table(['Name', 'Value', 'Source', ''], c.configs.map((x) => configRow(x))));
  }
  function configRow(x) {
    const value = h('div.cfg-val', x.value ?? h('span.muted', 'null'));
    const out = h('div');
    const edit = h('button.secondary', { type: 'button', 'data-edit': x.name }, 'Edit');
    const cell = h('div', value, out);
    edit.addEventListener('click', () => {
      editing += 1;
      const input = h('input', { value: x.value ?? '', size: 28, 'data-config': x.name });
      const save = h('button', { type: 'button', 'data-save': x.name }, 'Save');
      const reset = h('button.secondary', { type: 'button' }, 'Reset to default');
      const cancel = h('button.secondary', { type: 'button' }, 'Cancel');
      const done = async () => { editing -= 1; await refresh(); };
      const send = (v, b) => act(b, out, async () => {
        await api(`/v1/configs/topics/${enc(name)}`, { method: 'PATCH', body: { configs: { [x.name]: v } } });
        await done();
      });
      save.addEventListener('click', () => send(input.value, save));
      input.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') send(input.value, save); });
      reset.addEventListener('click', () => send(null, reset));
      cancel.addEventListener('click', done);
      fill(cell, h('div.inline', input, save, reset, cancel), out);
      edit.remove();
      input.focus();
    });
    const src = x.source === 'DYNAMIC_TOPIC_CONFIG' ? badge('topic override', 'info') : badge(x.source.replace(/_/g, ' ').toLowerCase());
    return [h('span.mono', x.name), cell, src, x.read_only ? '' : edit];
  }
  await refresh();
  return { title: `${name} configs`, refresh };
}

// ------------------------------------------------------------------------- messages

async function messages(root, name, params) {
  topicHeader(root, name, 'messages');
  const t = await api(`/v1/topics/${enc(name)}`);
  const get = (k, d) => params.get(k) ?? d;
  const partition = h('select', { name: 'partition' }, h('option', { value: '' }, 'all'),
    t.partitions.map((p) => h('option', { value: p.partition }, p.partition)));
  partition.value = get('partition', '');
  const from = h('select', { name: 'from' }, ['end', 'offset', 'timestamp', 'start'].map((v) => h('option', { value: v },
    { end: 'the end', offset: 'an offset', timestamp: 'a time', start: 'the start' }[v])));
  from.value = get('from', 'end');
  const at = h('input', { name: 'at', size: 22, value: get('at', ''), placeholder: 'offset, or 2026-12-06T10:00' });
  const order = h('select', { name: 'order' }, h('option', { value: 'newest' }, 'newest first'), h('option', { value: 'oldest' }, 'oldest first'));
  order.value = get('order', from.value === 'start' ? 'oldest' : 'newest');
  const limit = h('select', { name: 'limit' }, [20, 50, 100, 200, 500].map((n) => h('option', { value: n }, n)));
  limit.value = get('limit', '50');
  const format = h('select', { name: 'format' }, ['auto', 'json', 'text', 'hex'].map((v) => h('option', { value: v }, v)));
  format.value = get('format', 'auto');
  const search = h('input', { type: 'search', name: 'q', placeholder: 'search the loaded records', size: 28, value: get('q', ''), id: 'record-search' });
  const load = h('button', { type: 'submit' }, 'Load');
  const form = h('form.inline', { id: 'browse' },
    h('label', 'Partition', partition), h('label', 'From', from), h('label', 'Offset or time', at),
    h('label', 'Order', order), h('label', 'Limit', limit), h('label', 'Show as', format), load);
  const out = h('div');
  const summary = h('div.muted');
  const list = h('div.records', { id: 'records' });
  let loaded = [];
  let truncated = false;

  // The produce form.
  const pPart = h('select', { name: 'partition' }, h('option', { value: '' }, 'by key'),
    t.partitions.map((p) => h('option', { value: p.partition }, p.partition)));
  const pKey = h('input', { name: 'key', size: 24, placeholder: 'key (empty: none)' });
  const pValue = h('textarea', { name: 'value', rows: 3, cols: 48, placeholder: '{"hello": "world"}' });
  const pHeaders = h('textarea', { name: 'headers', rows: 3, cols: 28, placeholder: 'header=value per line' });
  const pOut = h('div');
  const pForm = h('form.inline', { id: 'produce' }, h('label', 'Partition', pPart), h('label', 'Key', pKey),
    h('label', 'Value', pValue), h('label', 'Headers', pHeaders), h('button', { type: 'submit' }, 'Produce'));
  pForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    act(pForm.querySelector('button'), pOut, async () => {
      const body = {
        key: pKey.value === '' ? null : pKey.value,
        value: pValue.value,
        headers: Object.entries(pairs(pHeaders.value, 'headers')).map(([key, value]) => ({ key, value })),
      };
      if (pPart.value !== '') body.partition = Number(pPart.value);
      const r = await api(`/v1/topics/${enc(name)}/records`, { method: 'POST', body });
      noteBox(pOut, `produced to partition ${r.partition} at offset ${r.offset}`);
      await fetchRecords();
    });
  });

  root.append(
    h('div.panel', h('h2', 'Browse'), form, out),
    h('div.panel', h('h2', 'Produce a record'), pForm, pOut),
    h('div.panel', h('div.title-row', h('h2', 'Records'), h('span.spacer'), search), summary, list));

  function query() {
    const q = new URLSearchParams({ order: order.value, limit: limit.value });
    if (partition.value !== '') q.set('partition', partition.value);
    if (from.value === 'offset') q.set('offset', at.value.trim());
    if (from.value === 'timestamp') {
      const ms = /^\d+$/.test(at.value.trim()) ? Number(at.value.trim()) : Date.parse(at.value.trim());
      if (!Number.isFinite(ms)) throw new Error(`'${at.value}' is not a time (try 2026-12-06T10:00 or milliseconds)`);
      q.set('timestamp', ms);
    }
    if (from.value === 'start') q.set('offset', '0');
    return q;
  }
  async function fetchRecords() {
    const r = await api(`/v1/topics/${enc(name)}/records?${query()}`);
    truncated = r.truncated;
    loaded = r.records.map((x) => ({
      ...x, key: unbase64(x.key), value: unbase64(x.value),
      headers: x.headers.map((hd) => ({ key: hd.key, value: unbase64(hd.value) })),
    }));
    show();
  }
  function show() {
    const needle = search.value.trim().toLowerCase();
    const f = format.value;
    const rows = [];
    let matches = 0;
    for (const r of loaded) {
      const k = render(r.key, f === 'auto' ? 'text' : f);
      const v = render(r.value, f);
      const hs = r.headers.map((hd) => `${hd.key}=${render(hd.value, f === 'hex' ? 'hex' : 'text').text}`);
      const hay = `${k.text}\n${v.text}\n${hs.join('\n')}`.toLowerCase();
      if (needle && !hay.includes(needle)) continue;
      matches += 1;
      rows.push(h('div.rec', { 'data-offset': r.offset, 'data-partition': r.partition },
        h('div.meta', h('div', 'partition ', h('b', r.partition), ' · offset ', h('b', r.offset)),
          h('div', time(r.timestamp)), h('div', r.timestamp_type)),
        h('div', h('div.k', 'key'), mark(h(`pre.${k.kind}`), k.text, needle)),
        h('div', h('div.k', 'value'), mark(h(`pre.${v.kind}`), v.text, needle),
          hs.length ? h('div.hdrs', h('span.k', 'headers '), hs.map((x) => h('span.badge', x)), ' ') : null)));
    }
    fill(summary, needle ? `${matches} of ${loaded.length} loaded records match "${search.value.trim()}"`
      : `${loaded.length} records loaded`, truncated ? ' (the read stopped at its 32 MiB budget: pick a partition to see more)' : '');
    fill(list, rows.length ? rows : h('p.muted', loaded.length ? 'no loaded record matches' : 'no records in this range'));
  }
  function mark(el, text, needle) {
    if (!needle) { el.textContent = text; return el; }
    const lower = text.toLowerCase();
    let i = 0;
    for (let j = lower.indexOf(needle); j >= 0; j = lower.indexOf(needle, i)) {
      el.append(text.slice(i, j), h('mark', text.slice(j, j + needle.length)));
      i = j + needle.length;
    }
    el.append(text.slice(i));
    return el;
  }
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams({ partition: partition.value, from: from.value, at: at.value, order: order.value,
      limit: limit.value, format: format.value, q: search.value });
    go(`#/topics/${enc(name)}/messages?${q}`); // a URL per query: back returns to the previous one
  });
  format.addEventListener('change', show);
  search.addEventListener('input', show);
  try {
    await fetchRecords();
  } catch (e) {
    errorBox(out, e);
  }
  return { title: `${name} messages` }; // no polling: the loaded range stays put while read
}

// --------------------------------------------------------------------------- groups

async function groups(root) {
  const list = h('div');
  const shares = shareGroupsPanel();
  root.append(h('h1', 'Consumer groups'), h('div.panel', list), shares.panel);
  async function refresh() {
    await shares.refresh();
    const g = await api('/v1/groups');
    const details = await Promise.all(g.groups.slice(0, 100).map((x) => api(`/v1/groups/${enc(x.group_id)}`).catch(() => null)));
    for (const d of details) if (d) noteLag(d.group_id, d.total_lag);
    fill(list, table(['Group', 'Type', 'State', 'Members', 'Topics', 'Total lag', 'Lag (recent)'],
      g.groups.map((x, i) => {
        const d = details[i];
        const topicsOf = d ? [...new Set(d.offsets.map((o) => o.topic))].join(', ') : '';
        return [h('a', { href: `#/groups/${enc(x.group_id)}`, 'data-group': x.group_id }, x.group_id), x.type,
          stateBadge(x.state), h('span', num(x.members)), topicsOf, h('b', d ? num(d.total_lag) : '–'),
          sparkline((store.lag.get(x.group_id) || []).map((p) => p.lag), { width: 120, height: 24 })];
      }), 'no consumer groups yet'));
  }
  await refresh();
  return { title: 'Consumer groups', refresh };
}

function stateBadge(s) {
  const kind = { Stable: 'ok', Empty: '', Dead: 'bad', PreparingRebalance: 'warn', CompletingRebalance: 'warn', Assigning: 'warn', Reconciling: 'warn' }[s];
  return badge(s, kind ?? '');
}

async function group(root, [id]) {
  const cards = h('div.cards');
  const chart = h('div.chart');
  const members = h('div');
  const offsets = h('div');
  const out = h('div');
  const preview = h('div');
  const topicSel = h('select', { name: 'topic', id: 'reset-topic' }, h('option', { value: '' }, 'all committed topics'));
  const to = h('select', { name: 'to', id: 'reset-to' }, ['earliest', 'latest', 'timestamp', 'offset'].map((v) => h('option', { value: v }, v)));
  const value = h('input', { name: 'value', placeholder: 'offset, or 2026-12-06T10:00', size: 24, id: 'reset-value' });
  const dry = h('button.secondary', { type: 'button', id: 'reset-preview' }, 'Preview (dry run)');
  const apply = h('button.danger', { type: 'button', id: 'reset-apply' }, 'Reset offsets');
  root.append(h('div.crumbs', h('a', { href: '#/groups' }, 'Consumer groups'), ' / ', id), h('h1', id), cards,
    h('div.panel', h('h2', 'Total lag over time'), chart),
    h('div.row', h('div.panel', h('h2', 'Members and assignments'), members),
      h('div.panel', h('h2', 'Reset offsets'),
        h('p.muted', 'Allowed only while the group has no members (stop its consumers first). Preview shows the new offsets without committing.'),
        h('div.inline', h('label', 'Topic', topicSel), h('label', 'To', to), h('label', 'Value', value), dry, apply), out, preview)),
    h('div.panel', h('h2', 'Committed offsets and lag'), offsets));
  const reset = (dryRun, button) => act(button, out, async () => {
    fill(preview);
    const body = { to: to.value, dry_run: dryRun };
    if (topicSel.value) body.topic = topicSel.value;
    if (to.value === 'offset') body.value = Number(value.value);
    if (to.value === 'timestamp') {
      const v = value.value.trim();
      body.value = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
      if (!Number.isFinite(body.value)) throw new Error(`'${v}' is not a time`);
    }
    const r = await api(`/v1/groups/${enc(id)}/offsets/reset`, { method: 'POST', body });
    fill(preview, h('p.muted', dryRun ? 'Preview: nothing committed yet.' : 'Committed.'),
      table(['Topic', 'Partition', 'Current', 'New'], r.offsets.map((o) => [o.topic, o.partition,
        o.current_offset ?? h('span.muted', 'none'), h('b', num(o.new_offset))])));
    if (!dryRun) { noteBox(out, `offsets of ${id} reset to ${to.value}`); await refresh(); }
  });
  dry.addEventListener('click', () => reset(true, dry));
  apply.addEventListener('click', () => reset(false, apply));
  let knownTopics = '';
  async function refresh() {
    const g = await api(`/v1/groups/${enc(id)}`);
    noteLag(id, g.total_lag);
    fill(cards, card('State', stateBadge(g.state)), card('Type', g.type), card('Assignor', g.protocol || '–', '', true),
      card('Members', num(g.members.length)), card('Total lag', h('span', { id: 'total-lag' }, num(g.total_lag)), g.total_lag ? '' : 'ok'));
    const hist = store.lag.get(id) || [];
    fill(chart, sparkline(hist.map((p) => p.lag), { width: 900, height: 90, label: 'total lag', stretch: true }),
      h('div.muted', hist.length ? `${hist.length} samples, ${Math.round((hist[hist.length - 1].t - hist[0].t) / 1000)} s; now ${num(g.total_lag)}, max ${num(Math.max(...hist.map((p) => p.lag)))}` : ''));
    fill(members, table(['Member', 'Client', 'Host', 'Assignment'], g.members.map((m) => [
      h('span.mono', m.member_id), m.client_id, m.client_host,
      m.assignment.map((a) => h('div', h('b', a.topic), ': ', a.partitions.join(', ')))]), 'no members (the group is inactive)'));
    fill(offsets, table(['Topic', 'Partition', 'Committed', 'Log end', 'Lag', 'Member'], g.offsets.map((o) => [
      h('a', { href: `#/topics/${enc(o.topic)}` }, o.topic), o.partition, num(o.committed_offset), num(o.log_end_offset),
      o.lag ? h('b', num(o.lag)) : num(o.lag), h('span.mono', o.member_id ?? '')]), 'no committed offsets'));
    const ts = [...new Set(g.offsets.map((o) => o.topic))].sort();
    if (ts.join() !== knownTopics) {
      knownTopics = ts.join();
      const keep = topicSel.value;
      fill(topicSel, h('option', { value: '' }, 'all committed topics'), ts.map((t) => h('option', { value: t }, t)));
      topicSel.value = keep;
    }
  }
  await refresh();
  return { title: id, refresh };
}

// ------------------------------------------------------------------ streaming queries

/** Compact JSON of an offsets value (Spark's {"topic": {"0": 12}} shape). */
function offsets(v) {
  return v === null || v === undefined ? '–' : h('span.mono', typeof v === 'string' ? v : JSON.stringify(v));
}

/** Rows (objects) as a table with the union of their keys as columns. */
function rowsTable(rows) {
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return table(cols, rows.map((r) => cols.map((c) => {
    const v = r[c];
    return v === null || v === undefined ? h('span.muted', 'null') : typeof v === 'object' ? JSON.stringify(v) : String(v);
  })), 'no rows yet');
}

async function queries(root) {
  if (store.mode !== 'sql') {
    root.append(h('h1', 'Streaming queries'), h('div.panel',
      h('p', 'Streaming SQL queries run in their own process, which serves their progress and memory tables as JSON:'),
      h('pre.mono', 'runnel sql -f examples/tweets/trending.sql --http 127.0.0.1:4040'),
      h('p', 'then open 127.0.0.1:4040 in the browser: that process serves this console with its query\'s page (query text, rates, batch duration, watermark, state over time, the latest rows of a memory sink), and the JSON at /progress, /query and /tables/<name>.')));
    return { title: 'Streaming queries' };
  }
  const head = h('div');
  const cards = h('div.cards');
  const charts = h('div.row');
  const stateCharts = h('div.row');
  const sql = h('pre.mono.query', { id: 'query-text' });
  const sources = h('div');
  const sink = h('div');
  const state = h('div');
  const tables = h('div', { id: 'memory-tables' });
  root.append(head, cards, h('div.panel', h('h2', 'Rates (recent batches)'), charts),
    h('div.panel', h('h2', 'Batches and state (recent batches)'), stateCharts),
    h('div.row', h('div.panel', h('h2', 'Query'), sql), h('div.panel', h('h2', 'Sink'), sink)),
    h('div.row', h('div.panel', h('h2', 'Sources'), sources), h('div.panel', h('h2', 'State'), state)),
    h('div.panel', h('h2', 'Memory tables'), tables));
  // The query's text does not change while it runs: fetched once (an older server
  // without /query leaves the panel saying so).
  api('/query').then((q) => fill(sql, q.query.trim())).catch(() => fill(sql, h('span.muted', 'not served by this version')));
  const sum = (p, key) => (p.stateOperators || []).reduce((n, o) => n + o[key], 0);
  const chart = (label, values, f) => h('div.metric.wide', h('div.muted', label),
    h('div.now', values.length ? f(values[values.length - 1]) : '–'),
    sparkline(values, { width: 320, height: 48, label, stretch: true }));
  async function refresh() {
    const [recent, names] = await Promise.all([api('/progress'), api('/tables')]);
    const last = recent.length ? recent[recent.length - 1] : null;
    fill(head, h('h1', 'Streaming query', last ? h('small', last.name || last.id) : null),
      h('p.muted', last ? `run ${last.runId}; last batch at ${last.timestamp}` : 'no batch has run yet'));
    const stateRows = last ? sum(last, 'numRowsTotal') : 0;
    fill(cards,
      card('Batch', h('span', { id: 'batch-id' }, last ? num(last.batchId) : '–')),
      card('Input rows/s', h('span', { id: 'input-rate' }, last ? rate(last.inputRowsPerSecond, '') : '–')),
      card('Processed rows/s', last ? rate(last.processedRowsPerSecond, '') : '–'),
      card('Batch duration', last ? `${num(last.batchDuration)} ms` : '–'),
      card('Watermark', last?.eventTime?.watermark ?? '–', '', true),
      card('State rows', num(stateRows)),
      card('State memory', last ? bytes(sum(last, 'memoryUsedBytes')) : '–'),
      card('Sink rows (last batch)', last ? num(last.sink.numOutputRows) : '–'));
    fill(charts,
      chart('Input rows/s', recent.map((p) => p.inputRowsPerSecond), (v) => rate(v, '')),
      chart('Processed rows/s', recent.map((p) => p.processedRowsPerSecond), (v) => rate(v, '')),
      chart('Input rows per batch', recent.map((p) => p.numInputRows), num));
    fill(stateCharts,
      chart('Batch duration', recent.map((p) => p.batchDuration), (v) => `${num(v)} ms`),
      chart('State rows', recent.map((p) => sum(p, 'numRowsTotal')), num),
      chart('State memory', recent.map((p) => sum(p, 'memoryUsedBytes')), bytes));
    fill(sink, last ? table(['Sink', 'Rows (last batch)'], [[h('span.mono', last.sink.description), num(last.sink.numOutputRows)]])
      : h('p.muted', 'no batch has run yet'));
    fill(sources, table(['Source', 'Start', 'End', 'Latest', 'Rows'], (last?.sources || []).map((x) => [
      h('span.mono', x.description), offsets(x.startOffset), offsets(x.endOffset), offsets(x.latestOffset), num(x.numInputRows)])));
    fill(state, table(['Operator', 'Rows', 'Updated', 'Removed', 'Late (dropped)', 'Memory'], (last?.stateOperators || []).map((o) => [
      o.operatorName, num(o.numRowsTotal), num(o.numRowsUpdated), num(o.numRowsRemoved), num(o.numRowsDroppedByWatermark), bytes(o.memoryUsedBytes)]),
    'no stateful operator'));
    const contents = await Promise.all(names.map((n) => api(`/tables/${enc(n)}`)));
    fill(tables, names.length ? names.map((n, i) => h('div', { 'data-table': n },
      h('h2', n, h('small.muted', ` ${num(contents[i].length)} rows${contents[i].length > 200 ? ', the last 200 shown' : ''}`)),
      rowsTable(contents[i].slice(-200)))) : h('p.muted', 'This query has no memory sink (format "memory").'));
  }
  await refresh();
  return { title: 'Streaming query', refresh };
}

function notFound(root) {
  root.append(h('h1', 'Not found'), h('p', 'No such view. ', h('a', { href: '#/overview' }, 'Back to the overview')));
  return { title: 'Not found' };
}

/** Route name (the hash's first segment) -> view. */
export const views = {
  overview,
  topics: (root, parts, params) => (parts.length ? topic(root, parts, params) : topics(root)),
  groups: (root, parts) => (parts.length ? group(root, parts) : groups(root)),
  'share-groups': (root, parts) => shareGroup(root, parts),
  acls,
  links,
  queries,
  notFound,
};
