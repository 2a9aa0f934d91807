// The console's security, share-group, cluster-link and streaming-query views in headless
// Chromium (playwright-core, the system's chromium), as console.test.js drives the others:
// - ACLs: list, filter by principal and resource, create and delete through the forms
//   (CreateAcls / DeleteAcls: the broker's authorizer decides), then the authorizer's
//   refusal shown once the console's own user has lost ALTER on the cluster;
// - a share group read by a confluent-kafka ShareConsumer that holds its records: its
//   member and per-partition start offset and in-flight records;
// - a cluster link between two brokers: state and per-partition lag falling to 0;
// - the streaming-queries page against a fake `runnel sql --http` (generated progress
//   whose rates move), then its "not signed in" state when the server answers 401; and
//   against a real `runnel sql --http` when the binary has the SQL engine.
// Every request the page makes is intercepted: any to another host fails the test.
// Screenshots go to $RUNNEL_ARTIFACTS/console (or a temp dir), as console.test.js's do.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { spawn, execFileSync, spawnSync } = require('node:child_process');
const { Kafka, logLevel } = require('kafkajs');
const { Broker, unique } = require('./broker');
const { browserSkip, launch, screenshotDir, consolePage, sleep } = require('./browser');

const CONSOLE_DIR = path.join(__dirname, '../../../crates/broker/console');
const AUTHORIZER = 'org.apache.kafka.metadata.authorizer.StandardAuthorizer';
const VENV_PYTHON = path.join(process.env.RUNNEL_VENV || path.join(os.homedir(), '.cache/runnel-venv'), 'bin/python');

/** Opens `origin` in a guarded page (`options`: the browser context's), runs
 * `f({page, open, shot})`, then checks that no page error and no foreign request
 * happened; on failure saves `<name>-failure.png`. */
async function withConsole(origin, name, f, options = {}) {
  const shots = screenshotDir();
  const browser = await launch();
  let page = null;
  try {
    const c = await consolePage(browser, origin, shots, options);
    const { seen, foreign, errors, shot, open } = c;
    page = c.page;
    await page.goto(`${origin}/`);
    await page.waitForSelector('#view[data-ready="true"]');
    const loadMs = Number(await page.getAttribute('body', 'data-first-render-ms'));
    await f({ page, open, shot, loadMs });
    assert.deepEqual(errors, [], 'uncaught errors in the page');
    assert.deepEqual(foreign, [], 'requests to hosts other than the server');
    assert.ok(seen.every((u) => u.startsWith(origin)), 'every request went to the server');
    console.log(`console (${name}): screenshots in ${shots}; first render ${Math.round(loadMs)} ms; ${seen.length} requests, none to another host`);
  } catch (e) {
    if (page) await page.screenshot({ path: path.join(shots, `${name}-failure.png`), fullPage: true }).catch(() => {});
    console.log(`console (${name}): failed; the page as it was: ${path.join(shots, `${name}-failure.png`)}`);
    throw e;
  } finally {
    await browser.close();
  }
}

/** Polls `f` until it returns a truthy value (returned), or fails after `ms`. */
async function until(what, f, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

const text = (page, sel) => page.textContent(sel);

test('console ACLs: list, filter, create, delete, and the authorizer\'s refusal', { skip: browserSkip, timeout: 60000 }, async () => {
  // Resources without an ACL are open (so the console's anonymous user may manage ACLs
  // until an ACL on the cluster exists).
  const broker = await new Broker({
    'http.listeners': '127.0.0.1:0',
    'authorizer.class.name': AUTHORIZER,
    'allow.everyone.if.no.acl.found': 'true',
  }).start();
  const origin = `http://127.0.0.1:${broker.httpPort}`;
  try {
    await withConsole(origin, 'acls', async ({ page, open, shot }) => {
      await open('#/acls');
      await page.waitForSelector('#acl-list >> text=no ACLs yet');
      const create = async (fields) => {
        for (const [k, v] of Object.entries({ pattern_type: 'LITERAL', host: '*', ...fields })) {
          const sel = `#create-acl [name=${k}]`;
          if (await page.$eval(sel, (el) => el.tagName) === 'SELECT') await page.selectOption(sel, v);
          else await page.fill(sel, v);
        }
        await page.click('#create-acl button[type=submit]');
      };
      await create({ principal: 'User:alice', permission: 'ALLOW', operation: 'READ', resource_type: 'TOPIC', resource_name: 'orders' });
      await page.waitForSelector('#acl-out .note');
      await create({ principal: 'User:bob', permission: 'DENY', operation: 'WRITE', resource_type: 'TOPIC', pattern_type: 'PREFIXED', resource_name: 'pay' });
      await page.waitForSelector('#acl-list >> text=User:bob');
      await create({ principal: 'User:alice', permission: 'ALLOW', operation: 'DESCRIBE', resource_type: 'GROUP', resource_name: 'billing' });
      await page.waitForSelector('#acl-list >> text=billing');
      assert.equal(await page.$$eval('#acl-list tbody tr', (r) => r.length), 3);
      // A principal without its type is refused by the broker (INVALID_REQUEST).
      await create({ principal: 'alice', permission: 'ALLOW', operation: 'READ', resource_type: 'TOPIC', resource_name: 'x' });
      await page.waitForSelector('#acl-out .error');
      assert.match(await text(page, '#acl-out .error'), /INVALID_REQUEST.*principal/);

      // Filters are URLs (the back button returns to the unfiltered list).
      await page.fill('#acl-filter [name=principal]', 'User:alice');
      await page.evaluate(() => { document.getElementById('view').dataset.ready = ''; });
      await page.click('#acl-filter button');
      await page.waitForURL(/#\/acls\?principal=User%3Aalice$/);
      await page.waitForSelector('#view[data-ready="true"]');
      assert.equal(await page.$$eval('#acl-list tbody tr', (r) => r.length), 2);
      assert.doesNotMatch(await text(page, '#acl-list'), /User:bob/);
      await open('#/acls?principal=User:alice&resource_type=GROUP');
      assert.equal(await page.$$eval('#acl-list tbody tr', (r) => r.length), 1);
      assert.match(await text(page, '#acl-list'), /billing/);
      await open('#/acls?resource_type=TOPIC&resource_name=nothing-here');
      await page.waitForSelector('#acl-list >> text=no ACL matches the filter');
      await open('#/acls');
      await shot('acls');

      // Delete bob's ACL with its row's button.
      await page.click('[data-delete-acl^="User:bob WRITE"]');
      await page.waitForSelector('#acl-out .note >> text=deleted');
      await until('bob\'s ACL gone', async () => !/User:bob/.test(await text(page, '#acl-list')));
      assert.equal(await page.$$eval('#acl-list tbody tr', (r) => r.length), 2);

      // An ACL on the cluster that allows the console's user (User:ANONYMOUS) only
      // DESCRIBE: from now on ALTER on the cluster is denied to it, so the authorizer
      // refuses the next change, and the page says so.
      await create({ principal: 'User:ANONYMOUS', permission: 'ALLOW', operation: 'DESCRIBE', resource_type: 'CLUSTER', resource_name: 'kafka-cluster' });
      await page.waitForSelector('#acl-list >> text=kafka-cluster');
      await create({ principal: 'User:carol', permission: 'ALLOW', operation: 'READ', resource_type: 'TOPIC', resource_name: 'orders' });
      await page.waitForSelector('#acl-out .denied[data-status="403"]');
      const refusal = await text(page, '#acl-out');
      assert.match(refusal, /Not authorized/);
      assert.match(refusal, /CLUSTER_AUTHORIZATION_FAILED/);
      assert.doesNotMatch(await text(page, '#acl-list'), /User:carol/);
      // Deleting is refused the same way (and the ACL stays).
      await page.click('[data-delete-acl^="User:alice READ"]');
      await page.waitForSelector('#acl-out .denied[data-status="403"] >> text=delete ACL');
      await shot('acls-refused');
      await page.reload();
      await page.waitForSelector('#acl-list tbody td');
      assert.match(await text(page, '#acl-list'), /User:alice/);
      // Cluster links need DESCRIBE_CONFIGS on the cluster (as DescribeConfigs on a
      // link does): refused now, and the view says so.
      await open('#/links');
      await page.waitForSelector('#view .denied[data-status="403"]');
      assert.match(await text(page, '#view'), /DESCRIBE_CONFIGS/);
      assert.equal(await text(page, '#status'), 'not authorized');
      await shot('links-not-authorized');
    });
  } finally {
    assert.deepEqual(await broker.stop(), []);
  }
});

/** Whether the venv's Python has confluent-kafka's ShareConsumer (KIP-932). */
function shareConsumerSkip() {
  if (!fs.existsSync(VENV_PYTHON)) return `no Python venv at ${VENV_PYTHON} (scripts/test.sh creates it)`;
  const r = spawnSync(VENV_PYTHON, ['-c', 'from confluent_kafka import ShareConsumer'], { timeout: 20000 });
  return r.status === 0 ? false : 'confluent-kafka in the venv has no ShareConsumer';
}

// A share consumer that reads from the earliest offset, prints how many records it
// got, and holds them acquired (explicit acknowledgement, never acknowledged) until
// killed or `run_s` passes.
const SHARE_HOLDER = `
import json, sys, time
from confluent_kafka import ShareConsumer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
cfg = json.loads(sys.argv[1])
a = AdminClient({"bootstrap.servers": cfg["bootstrap"]})
r = ConfigResource(ConfigResource.Type.GROUP, cfg["group"], incremental_configs=[
    ConfigEntry("share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET)])
a.incremental_alter_configs([r])[r].result(timeout=10)
c = ShareConsumer({"bootstrap.servers": cfg["bootstrap"], "group.id": cfg["group"],
                   "client.id": "console-share", "share.acknowledgement.mode": "explicit", "log_level": 3})
c.subscribe([cfg["topic"]])
deadline = time.monotonic() + cfg["run_s"]
held = 0
while time.monotonic() < deadline and held == 0:
    held = len(c.poll(0.5))
print(json.dumps({"held": held}), flush=True)
time.sleep(max(0.0, deadline - time.monotonic()))
`;

test('console share groups: members, start offset and in-flight records per partition', { skip: browserSkip || shareConsumerSkip(), timeout: 60000 }, async () => {
  const broker = await new Broker({
    'http.listeners': '127.0.0.1:0',
    'num.partitions': '1',
  }).start();
  const origin = `http://127.0.0.1:${broker.httpPort}`;
  const kafka = new Kafka({ clientId: 'console-share', brokers: [broker.bootstrap], logLevel: logLevel.NOTHING });
  const producer = kafka.producer();
  const topic = unique('queue');
  const group = unique('sg');
  let holder = null;
  try {
    await producer.connect();
    await producer.send({ topic, messages: Array.from({ length: 40 }, (_, i) => ({ value: `job ${i}` })) });
    holder = spawn(VENV_PYTHON, ['-c', SHARE_HOLDER, JSON.stringify({ bootstrap: broker.bootstrap, group, topic, run_s: 45 })],
      { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    holder.stdout.on('data', (d) => { out += d; });
    const held = await until('the share consumer to hold records', () => {
      const m = /"held": (\d+)/.exec(out);
      return m && Number(m[1]);
    }, 30000);
    assert.ok(held > 0);
    await withConsole(origin, 'share', async ({ page, open, shot }) => {
      await open('#/groups');
      await page.waitForSelector(`#share-groups [data-share-group="${group}"]`);
      const row = await page.$$eval('#share-groups tbody tr td', (tds) => tds.map((t) => t.textContent));
      assert.deepEqual([row[0], row[2], row[3]], [group, '1', '40']); // one member, 40 in flight
      await page.click(`[data-share-group="${group}"]`);
      await page.waitForURL(new RegExp(`#/share-groups/${group}$`));
      await page.waitForSelector('#share-partitions td');
      // The member (librdkafka's client id), and partition 0 from offset 0 with the 40
      // records in flight (held acquired, none acknowledged).
      assert.match(await text(page, '#view'), /console-share/);
      const cells = await page.$$eval('#share-partitions tbody tr td', (tds) => tds.map((t) => t.textContent));
      assert.deepEqual(cells.slice(0, 4), [topic, '0', '0', '40']);
      assert.ok(Number(cells[4]) >= held && Number(cells[4]) <= 40, `acquired ${cells[4]}, held ${held}`);
      assert.equal(await text(page, '#share-in-flight'), '40');
      await sleep(2100); // a second sample for the in-flight chart
      await shot('share-group');
      await open('#/groups');
      await shot('groups-with-share');
    });
  } finally {
    if (holder) holder.kill('SIGKILL');
    await producer.disconnect().catch(() => {});
    assert.deepEqual(await broker.stop(), []);
  }
});

test('console cluster links: state and per-partition lag', { skip: browserSkip, timeout: 60000 }, async () => {
  const source = await new Broker({ 'num.partitions': '2' }).start();
  const target = await new Broker({ 'http.listeners': '127.0.0.1:0' }).start();
  const origin = `http://127.0.0.1:${target.httpPort}`;
  const kafka = new Kafka({ clientId: 'console-link', brokers: [source.bootstrap], logLevel: logLevel.NOTHING });
  const producer = kafka.producer();
  const topic = unique('mirrored');
  try {
    await producer.connect();
    await producer.send({ topic, messages: Array.from({ length: 120 }, (_, i) => ({ key: `k${i}`, value: `v${i}` })) });
    execFileSync(process.env.RUNNEL_BIN, ['links', 'create', 'dr', '--source', source.bootstrap, '--topics', topic,
      '--set', 'metadata.max.age.ms=300', '--set', 'reconnect.backoff.max.ms=1000', '-b', target.bootstrap],
    { timeout: 30000, stdio: 'pipe' });
    await withConsole(origin, 'links', async ({ page, open, shot }) => {
      await open('#/links');
      await page.waitForSelector('[data-link="dr"]');
      // Both partitions appear and catch up: lag 0, mirrored offsets summing to 120.
      await until('the mirror to catch up', async () => {
        const rows = await page.$$eval('[data-link="dr"] tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
        return rows.length === 2 && rows.every((r) => r[3] === 'MIRRORING' && r[6] === '0')
          && rows.reduce((n, r) => n + Number(r[4].replace(/,/g, '')), 0) === 120;
      }, 30000);
      assert.match(await text(page, '[data-link="dr"]'), /ACTIVE/);
      assert.equal(await text(page, '[data-link-lag="dr"]'), '0');
      await sleep(2100); // a second sample for the lag chart
      await shot('links');
      // The source gone: the link says so.
      await source.kill9();
      await page.waitForSelector('[data-link="dr"] >> text=SOURCE_UNAVAILABLE', { timeout: 20000 });
      await shot('links-source-down');
      // And the ACL view of a broker without an authorizer says there is none.
      await open('#/acls');
      await page.waitForSelector('#acl-list >> text=no authorizer');
    });
  } finally {
    await producer.disconnect().catch(() => {});
    assert.deepEqual(await target.stop(), []);
    await source.stop();
  }
});

// ------------------------------------------------------------------ streaming queries

const QUERY = 'SELECT tweet.lang AS lang, count(*) AS tweets FROM tweets GROUP BY tweet.lang';

/** Progress as `runnel sql` reports it (Spark's StreamingQueryProgress), batch `n`. */
function fakeProgress(n) {
  const rows = 100 + ((n * 37) % 90);
  return {
    id: 'q-1', runId: 'run-1', name: 'langs', timestamp: new Date(Date.now()).toISOString(), batchId: n,
    batchDuration: 20 + (n % 7) * 5, numInputRows: rows, inputRowsPerSecond: rows * 1.0, processedRowsPerSecond: rows * 40.0,
    durationMs: { addBatch: 10, triggerExecution: 20 }, eventTime: { watermark: new Date(1765000000000 + n * 1000).toISOString() },
    stateOperators: [{ operatorName: 'stateStoreSave', numRowsTotal: 5 + n, numRowsUpdated: 3, numRowsRemoved: 0, numRowsDroppedByWatermark: 0, memoryUsedBytes: 1000 + n * 120 }],
    sources: [{ description: 'KafkaV2[Subscribe[tweets]]', startOffset: { tweets: { 0: n * 100 } }, endOffset: { tweets: { 0: n * 100 + rows } }, latestOffset: { tweets: { 0: n * 100 + rows } }, numInputRows: rows, inputRowsPerSecond: rows, processedRowsPerSecond: rows * 40 }],
    sink: { description: 'MemorySink[langs]', numOutputRows: 5 + n },
  };
}

/** A server in front of the console's sources (the files the binary embeds): `/` and
 * `/console/*` from crates/broker/console, and the JSON of `runnel sql --http` either
 * proxied from `upstream` or generated (a batch per request of /progress). With
 * `basic` ('user:password'), every request needs that HTTP Basic user (401 with a
 * challenge otherwise); with `state.deny`, every JSON request answers 401. */
function consoleServer(upstream, basic = null) {
  const state = { deny: false, batches: 0, unauthenticated: 0 };
  const types = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };
  const server = http.createServer((req, res) => {
    const url = req.url.split('?')[0];
    if (basic && req.headers.authorization !== `Basic ${Buffer.from(basic).toString('base64')}`) {
      state.unauthenticated += 1;
      res.writeHead(401, { 'www-authenticate': 'Basic realm="runnel"', 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'authentication required' }));
      return;
    }
    const file = url === '/' ? 'index.html' : url.startsWith('/console/') ? url.slice(9) : null;
    if (file !== null) {
      const p = path.join(CONSOLE_DIR, path.basename(file));
      if (!fs.existsSync(p)) { res.writeHead(404); res.end(); return; }
      res.writeHead(200, { 'content-type': types[path.extname(p).slice(1)], 'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self'" });
      res.end(fs.readFileSync(p));
      return;
    }
    const json = (status, body) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(body)); };
    if (state.deny) return json(401, { error: 'authentication required' });
    if (upstream) {
      const up = http.get(`${upstream}${req.url}`, (r) => { res.writeHead(r.statusCode, r.headers); r.pipe(res); });
      up.on('error', () => json(502, { error: 'upstream gone' }));
      return undefined;
    }
    if (url === '/progress') {
      state.batches += 1;
      return json(200, Array.from({ length: Math.min(state.batches, 100) }, (_, i) => fakeProgress(i + Math.max(0, state.batches - 100))));
    }
    if (url === '/progress/last') return json(200, fakeProgress(state.batches));
    if (url === '/query') return json(200, { query: QUERY });
    if (url === '/tables') return json(200, ['langs']);
    if (url === '/tables/langs') return json(200, [{ lang: 'en', tweets: 40 + state.batches }, { lang: 'ja', tweets: 12 }]);
    return json(404, { error: 'try /progress, /progress/last, /query, /tables, /tables/<name>' });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, state, origin: `http://127.0.0.1:${server.address().port}` })));
}

/** Checks the query page shows the query and that its input rate moves. */
async function checkQueryPage(page, shot, name, queryPattern, ratesDiffer) {
  await page.waitForSelector('text=Streaming query');
  await until('the query text', async () => queryPattern.test(await text(page, '#query-text')));
  assert.equal(await page.isVisible('#nav a[data-view="topics"]'), false, 'broker views are hidden on a query server');
  const rates = new Set();
  const batches = new Set();
  await until('the rates to move', async () => {
    rates.add(await text(page, '#input-rate'));
    batches.add(await text(page, '#batch-id'));
    return batches.size >= 2 && (ratesDiffer ? rates.size >= 2 : [...rates].some((r) => parseFloat(r) > 0));
  }, 30000);
  await page.waitForSelector('#memory-tables [data-table] tbody td');
  const charts = await page.$$eval('svg.spark path.line', (ps) => ps.length);
  assert.ok(charts >= 6, `rate, batch and state charts drawn (${charts})`);
  await shot(name);
}

test('streaming-queries page: a fake runnel sql --http behind HTTP Basic (rates move), and its not-signed-in state', { skip: browserSkip, timeout: 60000 }, async () => {
  // The page and every request it makes carry the browser's Basic credentials.
  const { server, state, origin } = await consoleServer(null, 'alice:alice-secret');
  try {
    await withConsole(origin, 'query-fake', async ({ page, shot }) => {
      await checkQueryPage(page, shot, 'query', /GROUP BY tweet\.lang/, true);
      assert.match(await text(page, '#view'), /MemorySink\[langs\]/);
      assert.match(await text(page, '#view'), /KafkaV2\[Subscribe\[tweets\]\]/);
      assert.match(await text(page, '#memory-tables'), /en/);
      // The server now wants a user: the status says so, and a reload shows why.
      state.deny = true;
      await page.waitForSelector('#status >> text=not signed in', { timeout: 10000 });
      await page.reload();
      await page.waitForSelector('#view .denied[data-status="401"]');
      assert.match(await text(page, '#view'), /Not signed in/);
      assert.equal(await text(page, '#status'), 'not signed in');
      await shot('query-not-signed-in');
    }, { httpCredentials: { username: 'alice', password: 'alice-secret' } });
    // The server did challenge (the browser answered with the credentials: the page
    // rendered and refreshed above).
    assert.ok(state.unauthenticated > 0, 'the server never asked for credentials');
  } finally {
    server.close();
  }
});

/** The binary that runs `runnel sql` (RUNNEL_SQL_BIN, else RUNNEL_BIN when it has the
 * SQL engine), or null. */
function sqlBinary() {
  for (const b of [process.env.RUNNEL_SQL_BIN, process.env.RUNNEL_BIN]) {
    if (b && spawnSync(b, ['sql', '--help'], { timeout: 20000 }).status === 0) return b;
  }
  return null;
}
const SQL_BIN = sqlBinary();

test('streaming-queries page: a real runnel sql --http', { skip: browserSkip || (!SQL_BIN && 'the binary has no SQL engine (built with --no-default-features)'), timeout: 90000 }, async () => {
  const broker = await new Broker({ 'num.partitions': '1' }).start();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'runnel-sql-'));
  const example = fs.readFileSync(path.join(__dirname, '../../../examples/tweets/languages.sql'), 'utf8');
  const start = example.indexOf('CREATE TEMPORARY VIEW out USING');
  const end = start + example.slice(start).indexOf(';') + 1;
  const file = path.join(work, 'langs.sql');
  fs.writeFileSync(file, `${example.slice(0, start)}CREATE TEMPORARY VIEW out USING memory OPTIONS (queryName 'langs', outputMode 'complete');${example.slice(end)}`);
  const topic = unique('tweets');
  const demo = spawn(SQL_BIN, ['demo', 'tweets', '-b', broker.bootstrap, '-t', topic, '--rate', '300', '--count', '20000'], { stdio: 'ignore' });
  // The query runs until stopped: `timeout` bounds it even if this test is torn down
  // before its `finally` (the demo producer stops by itself after --count).
  const sql = spawn('timeout', ['--kill-after=5', '120', SQL_BIN, 'sql', '-f', file, '-d', `bootstrap=${broker.bootstrap}`, '-d', `topic=${topic}`, '-d', 'startingOffsets=earliest',
    '--trigger', '1 second', '--progress', 'none', '--http', '127.0.0.1:0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  sql.stderr.on('data', (d) => { err += d; });
  let proxy = null;
  try {
    const addr = await until('runnel sql to say where it serves', () => (/http:\/\/(127\.0\.0\.1:\d+)\//.exec(err) || [])[1], 30000);
    let origin = `http://${addr}`;
    const page = await fetch(`${origin}/`);
    if (!(page.headers.get('content-type') || '').startsWith('text/html')) {
      // An older runnel sql serves only the JSON: this console's page in front of it.
      proxy = await consoleServer(origin);
      origin = proxy.origin;
      console.log(`console (query-real): ${SQL_BIN} serves no page; its JSON is proxied behind the console's sources`);
    }
    await withConsole(origin, 'query-real', async ({ page: p, shot }) => {
      await checkQueryPage(p, shot, 'query-real', proxy ? /./ : /tweet\.lang/, false);
      assert.match(await text(p, '#memory-tables'), /en/);
    });
  } finally {
    if (proxy) proxy.server.close();
    sql.kill('SIGTERM'); // timeout passes it on: the query stops after its batch
    demo.kill('SIGKILL');
    fs.rmSync(work, { recursive: true, force: true });
    assert.deepEqual(await broker.stop(), []);
  }
});
