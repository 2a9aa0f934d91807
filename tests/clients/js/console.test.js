// The web console (GET / on http.listeners) driven in headless Chromium with playwright-core
// (the system's `chromium`, Debian package; no browser download). One walk through the
// views: create a topic, produce (kafkajs and the console's form), find a record by text,
// edit a config and see the broker's refusal of a bad value, add partitions, watch a
// group's lag fall while a consumer reads, a reset refused while the group has members
// and previewed once it has none, delete a topic. Every request the page makes is
// intercepted: any to a host other than the broker fails the test.
//
// Screenshots of each view go to $RUNNEL_ARTIFACTS/console (or a temp dir), printed at
// the end with the page's load time (navigation to first render) and the bundle size.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { Kafka, logLevel } = require('kafkajs');
const { Broker, unique } = require('./broker');
const { browserSkip, launch, screenshotDir, consolePage, sleep } = require('./browser');

test('web console: topics, messages, configs, groups in headless Chromium', { skip: browserSkip, timeout: 90000 }, async () => {
  const shots = screenshotDir();
  const broker = await new Broker({
    'http.listeners': '127.0.0.1:0',
    'group.initial.rebalance.delay.ms': '0',
    'num.partitions': '1',
  }).start();
  const origin = `http://127.0.0.1:${broker.httpPort}`;
  const kafka = new Kafka({ clientId: 'console-test', brokers: [broker.bootstrap], logLevel: logLevel.NOTHING });
  const browser = await launch();
  const producer = kafka.producer();
  const admin = kafka.admin();
  let consumer = null;
  let page = null;
  try {
    // Every request the page makes: the broker's origin goes through, anything else is
    // recorded and aborted. `open(hash)` waits for the view at `hash` to have rendered.
    const c = await consolePage(browser, origin, shots);
    const { seen, foreign, errors, shot, open } = c;
    page = c.page;

    // ---- Overview: load time is navigation start to the first rendered view.
    await page.goto(`${origin}/`);
    await page.waitForSelector('#view[data-ready="true"]');
    const loadMs = Number(await page.getAttribute('body', 'data-first-render-ms'));
    // For comparison: when the HTML itself had arrived (before any script or API call).
    const htmlMs = await page.evaluate(() => performance.getEntriesByType('navigation')[0].responseEnd);
    await page.waitForSelector('text=Brokers and quorum');
    assert.match(await page.textContent('#view'), /Single node/);

    // ---- Topics: create one through the form.
    const topic = unique('console');
    await open('#/topics');
    await page.fill('#create-topic input[name=name]', topic);
    await page.fill('#create-topic input[name=partitions]', '3');
    await page.fill('#create-topic textarea[name=configs]', 'retention.ms=86400000');
    await page.click('#create-topic button[type=submit]');
    await page.waitForURL(new RegExp(`#/topics/${topic}$`));
    await page.waitForSelector('text=Log dir');
    // Creating it again is refused with the broker's TOPIC_ALREADY_EXISTS.
    await open('#/topics');
    await page.fill('#create-topic input[name=name]', topic);
    await page.click('#create-topic button[type=submit]');
    await page.waitForSelector('#view .error');
    assert.match(await page.textContent('#view .error'), /TOPIC_ALREADY_EXISTS/);

    // ---- Produce 300 JSON records with kafkajs; one says "needle".
    await producer.connect();
    const messages = [];
    for (let i = 0; i < 300; i += 1) {
      messages.push({ key: `k${i}`, value: JSON.stringify({ n: i, text: i === 137 ? 'a needle in the haystack' : `hay ${i}` }) });
    }
    await producer.send({ topic, messages });
    await page.waitForSelector(`a[data-topic="${topic}"]`);
    await sleep(2100); // the list refreshes itself
    await shot('topics');

    // ---- Topic: add partitions (3 -> 4).
    await open(`#/topics/${topic}`);
    await page.fill('#partition-count', '4');
    await page.click('text=Set partition count');
    await page.waitForSelector('text=now has 4 partitions');
    await shot('topic');

    // ---- Messages: produce from the form, then find the needle.
    await open(`#/topics/${topic}/messages?from=start&order=oldest&limit=500`);
    await page.fill('#produce input[name=key]', 'from-console');
    await page.fill('#produce textarea[name=value]', '{"made": "in the console"}');
    await page.fill('#produce textarea[name=headers]', 'source=console');
    await page.click('#produce button[type=submit]');
    await page.waitForSelector('text=/produced to partition \\d+ at offset \\d+/');
    await page.waitForSelector('text=301 records loaded');
    await page.fill('#record-search', 'needle');
    await page.waitForSelector('text=1 of 301 loaded records match "needle"');
    const hit = await page.textContent('#records .rec');
    assert.match(hit, /"n": 137/);
    assert.equal(await page.textContent('#records .rec mark'), 'needle');
    await page.fill('#record-search', 'source=console');
    await page.waitForSelector('text=1 of 301 loaded records match');
    assert.match(await page.textContent('#records .rec'), /in the console/);
    await page.fill('#record-search', 'needle');
    await shot('messages-search', false);
    await page.fill('#record-search', '');
    await shot('messages', false);
    // Newest first from a timestamp: the URL carries the query (back returns to it).
    await open(`#/topics/${topic}/messages?from=timestamp&at=${Date.now() + 3600000}&order=newest&limit=20&format=hex`);
    await page.waitForSelector('text=20 records loaded');
    await page.goBack();
    await page.waitForSelector('text=301 records loaded');

    // ---- Configs: a bad value shows the broker's refusal; a good one is saved.
    await open(`#/topics/${topic}/configs`);
    await page.click('button[data-edit="retention.ms"]');
    await page.fill('input[data-config="retention.ms"]', 'soon');
    await page.click('button[data-save="retention.ms"]');
    await page.waitForSelector('#view .error');
    const refusal = await page.textContent('#view .error');
    assert.match(refusal, /INVALID_CONFIG/);
    assert.match(refusal, /retention\.ms/);
    await shot('configs-refused');
    await page.fill('input[data-config="retention.ms"]', '3600000');
    await page.click('button[data-save="retention.ms"]');
    await page.waitForSelector('button[data-edit="retention.ms"]');
    const cfg = await (await fetch(`${origin}/v1/configs/topics/${topic}`)).json();
    assert.equal(cfg.configs.find((c) => c.name === 'retention.ms').value, '3600000');

    // ---- Groups: commit offset 0 (lag = everything), then a consumer reads slowly.
    const group = unique('console-g');
    await admin.connect();
    await admin.setOffsets({ groupId: group, topic, partitions: [0, 1, 2, 3].map((p) => ({ partition: p, offset: '0' })) });
    await open(`#/groups/${group}`);
    await page.waitForSelector('#total-lag');
    const lags = [];
    const readLag = async () => Number((await page.textContent('#total-lag')).replace(/,/g, ''));
    lags.push(await readLag());
    assert.equal(lags[0], 301);
    // Preview a reset while the group is empty: nothing is committed.
    await page.selectOption('#reset-to', 'latest');
    await page.click('#reset-preview');
    await page.waitForSelector('text=Preview: nothing committed yet.');
    consumer = kafka.consumer({ groupId: group, sessionTimeout: 10000, heartbeatInterval: 500 });
    await consumer.connect();
    await consumer.subscribe({ topic });
    await consumer.run({
      autoCommitInterval: 300,
      eachMessage: async () => { await sleep(25); },
    });
    const deadline = Date.now() + 30000;
    while (Date.now() < deadline) {
      await sleep(500);
      const v = await readLag();
      if (v !== lags[lags.length - 1]) lags.push(v);
      if (v === 0) break;
    }
    assert.equal(lags[lags.length - 1], 0, `lag never reached 0: ${lags}`);
    assert.ok(lags.length >= 3, `lag should fall in steps, saw ${lags}`);
    for (let i = 1; i < lags.length; i += 1) assert.ok(lags[i] < lags[i - 1], `lag rose: ${lags}`);
    // The group has a member now: a reset is refused.
    await page.waitForSelector('text=Stable');
    await page.selectOption('#reset-to', 'earliest');
    await page.click('#reset-apply');
    await page.waitForSelector('#view .error');
    assert.match(await page.textContent('#view .error'), /member/);
    await shot('group');
    await consumer.disconnect();
    consumer = null;
    await open('#/groups');
    await page.waitForSelector(`a[data-group="${group}"]`);
    await shot('groups');

    // ---- Delete a scratch topic through the UI.
    const scratch = unique('scratch');
    await admin.createTopics({ topics: [{ topic: scratch, numPartitions: 1 }] });
    await open(`#/topics/${scratch}`);
    await page.click('#delete-topic');
    await page.waitForURL(/#\/topics$/);
    const after = await (await fetch(`${origin}/v1/topics`)).json();
    assert.ok(!after.topics.some((t) => t.name === scratch));

    // ---- Streaming queries live in `runnel sql --http`: the broker's page says so.
    await open('#/queries');
    assert.match(await page.textContent('#view'), /runnel sql .*--http/);

    // ---- Overview again, with throughput from the traffic above.
    await open('#/overview');
    await sleep(2100); // one more metrics sample for the sparklines
    await shot('overview');

    assert.deepEqual(errors, [], 'uncaught errors in the page');
    assert.deepEqual(foreign, [], 'requests to hosts other than the broker');
    assert.ok(seen.length > 10 && seen.every((u) => u.startsWith(origin)), 'every request went to the broker');
    const assets = seen.filter((u) => u === `${origin}/` || u.startsWith(`${origin}/console/`));
    let bundle = 0;
    for (const u of new Set(assets)) bundle += (await (await fetch(u)).arrayBuffer()).byteLength;
    console.log(`console: screenshots in ${shots}`);
    console.log(`console: first render ${Math.round(loadMs)} ms after navigation start (the HTML had arrived at ${Math.round(htmlMs)} ms); bundle ${bundle} bytes in ${new Set(assets).size} assets; ${seen.length} requests, none to another host`);
  } catch (e) {
    // What the page showed when a step failed.
    if (page) await page.screenshot({ path: path.join(shots, 'failure.png'), fullPage: true }).catch(() => {});
    console.log(`console: failed; the page as it was: ${path.join(shots, 'failure.png')}`);
    throw e;
  } finally {
    if (consumer) await consumer.disconnect().catch(() => {});
    await producer.disconnect().catch(() => {});
    await admin.disconnect().catch(() => {});
    await browser.close();
    const problems = await broker.stop();
    assert.deepEqual(problems, []);
  }
});

