// kafkajs 2.2 against Runnel. kafkajs consumers require consumer groups (issue 3), so
// records produced here are read back with admin offsets and with kcat (librdkafka).
'use strict';

const { test, describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const { Kafka, logLevel, CompressionTypes } = require('kafkajs');
const { Broker, unique } = require('./broker.js');

const T = { timeout: 30000 };
let broker;
let kafka;

function client(b = broker) {
  return new Kafka({
    clientId: 'runnel-js-tests',
    brokers: [b.bootstrap],
    logLevel: logLevel.NOTHING,
    retry: { retries: 5, initialRetryTime: 100 },
    connectionTimeout: 5000,
    requestTimeout: 15000,
  });
}

// Read a partition with kcat: one object per record.
function kcatRead(topic, partition = 0) {
  const out = execFileSync('kcat', ['-q', '-b', broker.bootstrap, '-X', 'log_level=3', '-C', '-t', topic, '-p', String(partition),
    '-o', 'beginning', '-e', '-J'], { timeout: 30000, stdio: ['ignore', 'pipe', 'pipe'] });
  return out.toString().split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
}

async function withAdmin(fn, k = kafka) {
  const admin = k.admin();
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.disconnect();
  }
}

async function withProducer(opts, fn, k = kafka) {
  const producer = k.producer(opts);
  await producer.connect();
  try {
    return await fn(producer);
  } finally {
    await producer.disconnect();
  }
}

async function createTopic(topic, numPartitions = 1) {
  const created = await withAdmin((a) => a.createTopics({ topics: [{ topic, numPartitions }], waitForLeaders: true }));
  assert.equal(created, true);
  return topic;
}

function highs(offsets) {
  return Object.fromEntries(offsets.map((o) => [o.partition, [Number(o.low), Number(o.high)]]));
}

describe('kafkajs 2.2', () => {
  before(async () => {
    broker = await new Broker().start();
    kafka = client();
  });

  after(async () => {
    const problems = await broker.stop();
    assert.deepEqual(problems, []);
  });

  test('admin creates, lists, describes and deletes topics', T, async () => {
    const name = unique('jsadm');
    await withAdmin(async (admin) => {
      assert.equal(await admin.createTopics({ topics: [{ topic: name, numPartitions: 3 }], waitForLeaders: true }), true);
      // Creating it again reports "not created" (TOPIC_ALREADY_EXISTS is not an error for kafkajs).
      assert.equal(await admin.createTopics({ topics: [{ topic: name, numPartitions: 3 }] }), false);
      assert.ok((await admin.listTopics()).includes(name));
      const md = await admin.fetchTopicMetadata({ topics: [name] });
      assert.equal(md.topics.length, 1);
      assert.equal(md.topics[0].name, name);
      const parts = md.topics[0].partitions.sort((a, b) => a.partitionId - b.partitionId);
      assert.deepEqual(parts.map((p) => p.partitionId), [0, 1, 2]);
      for (const p of parts) {
        assert.equal(p.partitionErrorCode, 0);
        assert.ok(p.leader >= 0);
        assert.deepEqual(p.replicas, [p.leader]);
        assert.deepEqual(p.isr, [p.leader]);
      }
      const cluster = await admin.describeCluster();
      assert.equal(cluster.brokers.length, 1);
      assert.equal(cluster.brokers[0].host, '127.0.0.1');
      assert.equal(cluster.brokers[0].port, broker.port);
      assert.equal(cluster.controller, cluster.brokers[0].nodeId);

      await admin.deleteTopics({ topics: [name], timeout: 10000 });
      const deadline = Date.now() + 10000;
      while ((await admin.listTopics()).includes(name) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(!(await admin.listTopics()).includes(name));
    });
  });

  test('invalid topic names are refused with INVALID_TOPIC_EXCEPTION', T, async () => {
    for (const topic of ['has space', 'a/b', '..', 'x'.repeat(250)]) {
      const err = await withAdmin((a) => a.createTopics({ topics: [{ topic, numPartitions: 1 }] })).then(
        () => null, (e) => e);
      assert.ok(err, `creating ${JSON.stringify(topic)} succeeded`);
      const types = (err.errors || [err]).map((e) => e.type);
      assert.deepEqual(types, ['INVALID_TOPIC_EXCEPTION'], `${topic}: ${err}`);
    }
  });

  test('producer send with keys and headers, read back by offsets and by kcat', T, async () => {
    const topic = await createTopic(unique('jsprod'));
    const messages = Array.from({ length: 100 }, (_, i) => ({
      key: `k${i}`, value: `v${i}`, headers: { n: String(i), src: 'kafkajs' }, partition: 0,
    }));
    const meta = await withProducer({}, (p) => p.send({ topic, messages }));
    assert.equal(meta.length, 1);
    assert.equal(meta[0].topicName, topic);
    assert.equal(meta[0].errorCode, 0);
    assert.equal(meta[0].baseOffset, '0');
    const meta2 = await withProducer({}, (p) => p.send({ topic, messages: [{ key: null, value: null, partition: 0 }] }));
    assert.equal(meta2[0].baseOffset, '100');
    const offsets = await withAdmin((a) => a.fetchTopicOffsets(topic));
    assert.deepEqual(highs(offsets), { 0: [0, 101] });
    const recs = kcatRead(topic);
    assert.equal(recs.length, 101);
    recs.slice(0, 100).forEach((r, i) => {
      assert.equal(r.offset, i);
      assert.equal(r.key, `k${i}`);
      assert.equal(r.payload, `v${i}`);
      assert.deepEqual(r.headers, ['n', String(i), 'src', 'kafkajs']);
    });
    assert.equal(recs[100].key, null);
    assert.equal(recs[100].payload, null);
  });

  for (const [name, compression] of [['none', CompressionTypes.None], ['gzip', CompressionTypes.GZIP]]) {
    test(`producer send with compression ${name}`, T, async () => {
      const topic = await createTopic(unique(`js${name}`), 2);
      const messages = Array.from({ length: 400 }, (_, i) => ({ key: `key-${i}`, value: `value ${i} `.repeat(20) }));
      const meta = await withProducer({}, (p) => p.send({ topic, compression, messages }));
      assert.ok(meta.every((m) => m.errorCode === 0));
      const offsets = highs(await withAdmin((a) => a.fetchTopicOffsets(topic)));
      assert.equal(offsets[0][1] + offsets[1][1], 400);
      assert.ok(offsets[0][1] > 0 && offsets[1][1] > 0, 'keys spread over both partitions');
      const got = [...kcatRead(topic, 0), ...kcatRead(topic, 1)];
      assert.deepEqual(got.map((r) => r.payload).sort(), messages.map((m) => m.value).sort());
      for (const r of got) assert.equal(r.payload, messages[Number(r.key.slice(4))].value);
    });
  }

  test('acks 0, 1 and -1', T, async () => {
    const topic = await createTopic(unique('jsacks'));
    let expected = 0;
    for (const acks of [1, -1, 0]) {
      const meta = await withProducer({}, (p) => p.send({
        topic, acks, messages: Array.from({ length: 50 }, (_, i) => ({ value: `${acks}:${i}`, partition: 0 })),
      }));
      if (acks !== 0) assert.equal(meta[0].baseOffset, String(expected));
      expected += 50;
    }
    const deadline = Date.now() + 10000;
    let offsets;
    do {
      offsets = highs(await withAdmin((a) => a.fetchTopicOffsets(topic)));
    } while (offsets[0][1] < expected && Date.now() < deadline);
    assert.deepEqual(offsets, { 0: [0, 150] });
    assert.deepEqual(kcatRead(topic).map((r) => r.payload).slice(100, 102), ['0:0', '0:1']);
  });

  test('idempotent producer', T, async () => {
    const topic = await createTopic(unique('jsidem'));
    await withProducer({ idempotent: true, maxInFlightRequests: 1 }, async (p) => {
      for (let batch = 0; batch < 5; batch++) {
        const meta = await p.send({
          topic, messages: Array.from({ length: 20 }, (_, i) => ({ value: `${batch}-${i}`, partition: 0 })),
        });
        assert.equal(meta[0].baseOffset, String(batch * 20));
      }
    });
    const got = kcatRead(topic).map((r) => r.payload);
    assert.equal(got.length, 100);
    assert.equal(got[99], '4-19');
  });

  test('auto topic creation on send to an unknown topic', T, async () => {
    const topic = unique('jsauto');
    const meta = await withProducer({ allowAutoTopicCreation: true },
      (p) => p.send({ topic, messages: [{ value: 'hello' }] }));
    assert.equal(meta[0].baseOffset, '0');
    const md = await withAdmin((a) => a.fetchTopicMetadata({ topics: [topic] }));
    assert.equal(md.topics[0].partitions.length, 1);
  });

  test('fetchTopicOffsetsByTimestamp', T, async () => {
    const topic = await createTopic(unique('jsts'));
    const base = 1700000000000;
    await withProducer({}, async (p) => {
      for (let i = 0; i < 5; i++) {
        await p.send({ topic, messages: [{ value: `t${i}`, timestamp: String(base + 1000 * i), partition: 0 }] });
      }
    });
    await withAdmin(async (a) => {
      assert.deepEqual((await a.fetchTopicOffsetsByTimestamp(topic, base + 2500)).map((o) => [o.partition, o.offset]), [[0, '3']]);
      assert.deepEqual((await a.fetchTopicOffsetsByTimestamp(topic, base)).map((o) => o.offset), ['0']);
      // After the last record, Kafka answers -1 and kafkajs substitutes the latest offset.
      assert.deepEqual((await a.fetchTopicOffsetsByTimestamp(topic, base + 99999)).map((o) => o.offset), ['5']);
    });
    assert.deepEqual(kcatRead(topic).map((r) => r.ts), [0, 1, 2, 3, 4].map((i) => base + 1000 * i));
  });

  test('a consumer group reads what was produced', { timeout: 40000 }, async () => {
    const topic = await createTopic(unique('jsgroup'));
    await withProducer({}, (p) => p.send({ topic, messages: [{ value: 'a' }, { value: 'b' }] }));
    const consumer = kafka.consumer({ groupId: unique('g'), sessionTimeout: 6000, heartbeatInterval: 1000,
      retry: { retries: 1 } });
    const seen = [];
    try {
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      const done = new Promise((resolve) => {
        consumer.run({ eachMessage: async ({ message }) => { seen.push(message.value.toString()); if (seen.length === 2) resolve(); } });
      });
      let timer;
      await Promise.race([done, new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('no records via a group in 15 s')), 15000); })])
        .finally(() => clearTimeout(timer));
      assert.deepEqual(seen, ['a', 'b']);
    } finally {
      await Promise.race([consumer.disconnect().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
    }
  });
});
