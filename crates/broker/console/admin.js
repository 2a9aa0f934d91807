// The views that came with security and the newer group and link kinds: ACLs (list,
// filter, create, delete: DescribeAcls / CreateAcls / DeleteAcls through the admin API,
// so the broker's authorizer decides and its refusal is shown), share groups (KIP-932:
// members, per-partition start offset and in-flight records) and cluster links (state,
// per-partition lag).

import {
  api, h, fill, table, errorBox, noteBox, card, act, num, badge, sparkline,
} from './lib.js';
import { go } from './app.js';

const enc = encodeURIComponent;

/** Samples kept per series (2 minutes at the poll interval), and series kept (a tab
 * left open while groups come and go forgets the oldest). */
const HISTORY = 60;
const SERIES = 500;
const history = new Map(); // series key -> [values], oldest series first

function note(key, v) {
  const s = history.get(key) || [];
  s.push(v);
  if (s.length > HISTORY) s.shift();
  history.delete(key);
  history.set(key, s);
  if (history.size > SERIES) history.delete(history.keys().next().value);
  return s;
}

// ----------------------------------------------------------------------------- ACLs

const RESOURCE_TYPES = ['TOPIC', 'GROUP', 'CLUSTER', 'TRANSACTIONAL_ID', 'DELEGATION_TOKEN', 'USER'];
const OPERATIONS = ['ALL', 'READ', 'WRITE', 'CREATE', 'DELETE', 'ALTER', 'DESCRIBE', 'CLUSTER_ACTION',
  'DESCRIBE_CONFIGS', 'ALTER_CONFIGS', 'IDEMPOTENT_WRITE', 'CREATE_TOKENS', 'DESCRIBE_TOKENS'];

function select(name, values, value) {
  const s = h('select', { name }, values.map((v) => h('option', { value: v }, v === '' ? 'any' : v)));
  s.value = value;
  return s;
}

export async function acls(root, parts, params) {
  const principal = h('input', { name: 'principal', size: 20, placeholder: 'User:alice', value: params.get('principal') ?? '' });
  const rtype = select('resource_type', ['', ...RESOURCE_TYPES], params.get('resource_type') ?? '');
  const rname = h('input', { name: 'resource_name', size: 20, placeholder: 'orders', value: params.get('resource_name') ?? '' });
  const filter = h('form.inline', { id: 'acl-filter' }, h('label', 'Principal', principal),
    h('label', 'Resource type', rtype), h('label', 'Resource name', rname),
    h('button.secondary', { type: 'submit' }, 'Filter'));
  filter.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, el] of [['principal', principal], ['resource_type', rtype], ['resource_name', rname]]) {
      if (el.value.trim()) q.set(k, el.value.trim());
    }
    go(`#/acls${q.size ? `?${q}` : ''}`); // a URL per filter: back returns to the previous one
  });

  const form = h('form.inline', { id: 'create-acl' },
    h('label', 'Principal', h('input', { name: 'principal', required: true, size: 18, placeholder: 'User:alice' })),
    h('label', 'Permission', select('permission', ['ALLOW', 'DENY'], 'ALLOW')),
    h('label', 'Operation', select('operation', OPERATIONS, 'READ')),
    h('label', 'Host', h('input', { name: 'host', size: 10, value: '*' })),
    h('label', 'Resource type', select('resource_type', RESOURCE_TYPES, 'TOPIC')),
    h('label', 'Pattern', select('pattern_type', ['LITERAL', 'PREFIXED'], 'LITERAL')),
    h('label', 'Resource name', h('input', { name: 'resource_name', required: true, size: 18, placeholder: 'orders, or * for all' })),
    h('button', { type: 'submit' }, 'Create ACL'));
  const out = h('div', { id: 'acl-out' });
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const body = Object.fromEntries(new FormData(form));
    act(form.querySelector('button'), out, async () => {
      await api('/v1/acls', { method: 'POST', body });
      noteBox(out, `created: ${body.principal} ${body.permission} ${body.operation} on ${body.resource_type} ${body.resource_name}`);
      await refresh();
    });
  });

  const list = h('div', { id: 'acl-list' });
  root.append(h('h1', 'ACLs'),
    h('p.muted', 'Listed, created and deleted with DescribeAcls, CreateAcls and DeleteAcls: the broker\'s authorizer decides (DESCRIBE on the cluster to list, ALTER to change) for the user you signed in as.'),
    h('div.panel', h('h2', 'Create an ACL'), form, out),
    h('div.panel', h('div.title-row', h('h2', 'ACLs'), h('span.spacer'), filter), list));

  function row(a) {
    const del = h('button.danger', { type: 'button', 'data-delete-acl': `${a.principal} ${a.operation} ${a.resource_name}` }, 'Delete');
    del.addEventListener('click', () => {
      if (!window.confirm(`Delete ${a.permission} ${a.operation} for ${a.principal} on ${a.resource_type} ${a.resource_name}?`)) return;
      act(del, out, async () => {
        const { principal: p, host, operation, permission, resource_type: rt, resource_name: rn, pattern_type: pt } = a;
        await api('/v1/acls', { method: 'DELETE', body: { principal: p, host, operation, permission, resource_type: rt, resource_name: rn, pattern_type: pt } });
        noteBox(out, `deleted: ${a.principal} ${a.permission} ${a.operation} on ${a.resource_type} ${a.resource_name}`);
        await refresh();
      });
    });
    return [h('span.mono', a.principal), badge(a.permission, a.permission === 'ALLOW' ? 'ok' : 'bad'), a.operation,
      h('span.mono', a.host), a.resource_type, a.pattern_type === 'LITERAL' ? a.pattern_type : badge(a.pattern_type, 'info'),
      h('span.mono', a.resource_name), del];
  }
  async function refresh() {
    const q = new URLSearchParams(params);
    let r;
    try {
      r = await api(`/v1/acls${q.size ? `?${q}` : ''}`);
    } catch (e) {
      errorBox(list, e);
      return;
    }
    if (!r.authorizer) {
      fill(list, h('p.note', { role: 'status' }, 'This broker has no authorizer (authorizer.class.name is not set): every request is allowed and there are no ACLs.'));
      return;
    }
    const acl = r.acls.sort((a, b) => `${a.resource_type}${a.resource_name}${a.principal}`.localeCompare(`${b.resource_type}${b.resource_name}${b.principal}`));
    fill(list, table(['Principal', 'Permission', 'Operation', 'Host', 'Resource', 'Pattern', 'Name', ''],
      acl.map(row), params.size ? 'no ACL matches the filter' : 'no ACLs yet'));
  }
  await refresh();
  return { title: 'ACLs', refresh };
}

// ---------------------------------------------------------------------- share groups

/** The share groups panel of the groups view. */
export function shareGroupsPanel() {
  const list = h('div', { id: 'share-groups' });
  const panel = h('div.panel', h('h2', 'Share groups'),
    h('p.muted', 'KIP-932 queues: members share the partitions; in-flight records are those between the share-partition start offset and the end, acquired or waiting for delivery.'),
    list);
  async function refresh() {
    let g;
    try {
      g = await api('/v1/share-groups');
    } catch (e) {
      errorBox(list, e);
      return;
    }
    fill(list, table(['Group', 'State', 'Members', 'In flight', 'In flight (recent)'], g.groups.map((x) => [
      h('a', { href: `#/share-groups/${enc(x.group_id)}`, 'data-share-group': x.group_id }, x.group_id),
      badge(x.state, x.state === 'Stable' ? 'ok' : ''), h('span', num(x.members)), h('b', num(x.in_flight)),
      sparkline(note(`share:${x.group_id}`, x.in_flight), { width: 120, height: 24 })]), 'no share groups'));
  }
  return { panel, refresh };
}

export async function shareGroup(root, [id]) {
  const cards = h('div.cards');
  const chart = h('div.chart');
  const members = h('div');
  const parts = h('div', { id: 'share-partitions' });
  root.append(h('div.crumbs', h('a', { href: '#/groups' }, 'Consumer groups'), ' / share group / ', id), h('h1', id, h('small', 'share group')),
    cards, h('div.panel', h('h2', 'In-flight records over time'), chart),
    h('div.row', h('div.panel', h('h2', 'Members and assignments'), members),
      h('div.panel', h('h2', 'Share-partitions'), parts)));
  async function refresh() {
    const g = await api(`/v1/share-groups/${enc(id)}`);
    const inFlight = g.partitions.reduce((n, p) => n + p.in_flight, 0);
    const acquired = g.partitions.reduce((n, p) => n + p.acquired, 0);
    const hist = note(`share:${id}`, inFlight);
    fill(cards, card('State', badge(g.state, g.state === 'Stable' ? 'ok' : '')), card('Group epoch', num(g.group_epoch)),
      card('Members', num(g.members.length)), card('In flight', h('span', { id: 'share-in-flight' }, num(inFlight))),
      card('Acquired', num(acquired)));
    fill(chart, sparkline(hist, { width: 900, height: 90, label: 'in-flight records', stretch: true }),
      h('div.muted', `${hist.length} samples; now ${num(inFlight)}`));
    fill(members, table(['Member', 'Client', 'Host', 'Epoch', 'Assignment'], g.members.map((m) => [
      h('span.mono', m.member_id), m.client_id, m.client_host, m.member_epoch,
      m.assignment.map((a) => h('div', h('b', a.topic), ': ', a.partitions.join(', ')))]), 'no members'));
    fill(parts, table(['Topic', 'Partition', 'Start offset', 'In flight', 'Acquired'], g.partitions.map((p) => [
      h('a', { href: `#/topics/${enc(p.topic)}` }, p.topic), p.partition, num(p.start_offset),
      p.in_flight ? h('b', num(p.in_flight)) : num(p.in_flight), num(p.acquired)]),
    'no share-partition on this broker yet (they appear once a member fetches)'));
  }
  await refresh();
  return { title: `${id} (share group)`, refresh };
}

// ---------------------------------------------------------------------- cluster links

function stateBadge(s) {
  return badge(s, { ACTIVE: 'ok', MIRRORING: 'ok', PROMOTED: 'info', SOURCE_UNAVAILABLE: 'bad', FAILED: 'bad', PAUSED: 'warn' }[s] ?? '');
}

export async function links(root, [only]) {
  const list = h('div', { id: 'links' });
  root.append(h('h1', 'Cluster links', only ? h('small', only) : null),
    h('p.muted', 'Mirror topics copied from another cluster (runnel links create NAME --source HOST:PORT). Lag is the source\'s end offset minus the mirrored one.'),
    list);
  async function refresh() {
    const r = await api(`/v1/links${only ? `?name=${enc(only)}` : ''}`);
    if (!r.links.length) {
      fill(list, h('div.panel', h('p.muted', 'No cluster links on this broker.')));
      return;
    }
    fill(list, r.links.map((l) => {
      const lags = l.topics.flatMap((t) => t.partitions.map((p) => p.lag ?? 0));
      const total = lags.reduce((n, v) => n + v, 0);
      const hist = note(`link:${l.name}`, total);
      return h('div.panel', { 'data-link': l.name },
        h('div.title-row', h('h2', h('a', { href: `#/links/${enc(l.name)}` }, l.name)), stateBadge(l.state),
          h('span.muted', `source ${l.configs?.['bootstrap.servers'] ?? ''}`), h('span.spacer'),
          h('span', 'total lag ', h('b', { 'data-link-lag': l.name }, num(total)))),
        l.error ? h('div.error', l.error) : null,
        h('div.chart', sparkline(hist, { width: 900, height: 40, label: 'total lag', stretch: true })),
        table(['Topic', 'Topic state', 'Partition', 'State', 'Mirrored', 'Source end', 'Lag', 'Error'],
          l.topics.flatMap((t) => t.partitions.map((p) => [
            h('a', { href: `#/topics/${enc(t.topic)}` }, t.topic), stateBadge(t.state), p.partition, stateBadge(p.state),
            num(p.mirrored_offset), num(p.source_end), p.lag ? h('b', num(p.lag)) : num(p.lag), p.error ?? '',
          ])), 'no mirror topics'));
    }));
  }
  await refresh();
  return { title: only ? `${only} (link)` : 'Cluster links', refresh };
}
