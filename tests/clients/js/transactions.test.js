// kafkajs 2.2 transactions against Runnel (issue 7): producer.transaction() with send,
// commit and abort, sendOffsets, fencing by a second producer with the same
// transactionalId, and consumers with readUncommitted false / true.
'use strict';

const { test, describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Kafka, logLevel } = require('kafkajs');
const { Broker, unique } = require('./broker.js');

const T = { timeout: 60000 };
let broker;
let kafka;

function client(b = broker) {
  return new Kafka({
    clientId: 'runnel-js-txn-tests',
    brokers: [b.bootstrap],
    logLevel: logLevel.NOTHING,
    retry: { retries: 5, initialRetryTime: 100 },
    connectionTimeout: 5000,
    requestTimeout: 15000,
  });
}

async function withAdmin(fn) {
  const admin = kafka.admin();
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.disconnect();
  }
}

async function createTopic(topic, numPartitions = 1) {
  const created = await withAdmin((a) => a.createTopics({ topics: [{ topic, numPartitions }], waitForLeaders: true }));
  assert.equal(created, true);
  return topic;
}

async function txnProducer(transactionalId = unique('jstx')) {
  const p = kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 });
  await p.connect();
  return p;
}

// Read a topic from the beginning in a fresh consumer group until `count` records came
// (then `settleMs` more, to catch extras), or fail after `timeoutMs`. Returns
// [{partition, offset, value}] sorted by partition and offset.
async function readAll(topic, { readUncommitted, count, settleMs = 1500, timeoutMs = 30000 }) {
  const consumer = kafka.consumer({ groupId: unique('jsg'), readUncommitted, maxWaitTimeInMs: 200,
    sessionTimeout: 10000, heartbeatInterval: 500 });
  const got = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    let reached;
    const done = new Promise((resolve) => { reached = resolve; });
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        got.push({ partition, offset: Number(message.offset), value: message.value.toString() });
        if (got.length >= count) reached();
      },
    });
    if (count === 0) reached();
    let timer;
    const timeout = new Promise((resolve) => { timer = setTimeout(resolve, timeoutMs); });
    await Promise.race([done, timeout]);
    clearTimeout(timer);
    assert.ok(got.length >= count, `read ${got.length} of ${count} records from ${topic} in ${timeoutMs} ms: ${JSON.stringify(got)}`);
    await new Promise((r) => setTimeout(r, settleMs));
  } finally {
    await consumer.disconnect();
  }
  return got.sort((a, b) => a.partition - b.partition || a.offset - b.offset);
}

const msgs = (prefix, n) => Array.from({ length: n }, (_, i) => ({ value: `${prefix}${i}` }));
const vals = (prefix, n) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

describe('kafkajs 2.2 transactions', () => {
  before(async () => {
    broker = await new Broker({ 'group.initial.rebalance.delay.ms': 0 }).start();
    kafka = client();
  });

  after(async () => {
    const problems = await broker.stop();
    assert.deepEqual(problems, []);
  });

  test('commit is visible to readUncommitted=false, abort is not', T, async () => {
    const topic = await createTopic(unique('jstxc'));
    const p = await txnProducer();
    try {
      let txn = await p.transaction();
      await txn.send({ topic, messages: msgs('c', 5).map((m) => ({ ...m, partition: 0 })) });
      await txn.commit();
      txn = await p.transaction();
      await txn.send({ topic, messages: msgs('a', 5).map((m) => ({ ...m, partition: 0 })) });
      await txn.abort();
      txn = await p.transaction();
      await txn.send({ topic, messages: msgs('d', 3).map((m) => ({ ...m, partition: 0 })) });
      await txn.commit();
    } finally {
      await p.disconnect();
    }
    const committed = await readAll(topic, { readUncommitted: false, count: 8 });
    assert.deepEqual(committed.map((r) => r.value), [...vals('c', 5), ...vals('d', 3)]);
    // c: 0-4, commit marker 5; a: 6-10, abort marker 11; d: 12-14, marker 15.
    assert.deepEqual(committed.map((r) => r.offset), [0, 1, 2, 3, 4, 12, 13, 14]);
    const all = await readAll(topic, { readUncommitted: true, count: 13 });
    assert.deepEqual(all.map((r) => r.value), [...vals('c', 5), ...vals('a', 5), ...vals('d', 3)]);
    const offsets = await withAdmin((a) => a.fetchTopicOffsets(topic));
    assert.equal(Number(offsets[0].high), 16);
  });

  test('an open transaction is invisible until its commit; several partitions commit together', T, async () => {
    const topic = await createTopic(unique('jstxo'), 3);
    const p = await txnProducer();
    try {
      const txn = await p.transaction();
      await txn.send({ topic, messages: [0, 1, 2].flatMap((part) => msgs(`p${part}-`, 3).map((m) => ({ ...m, partition: part }))) });
      // Nothing is readable under read_committed while it is open.
      const before = await readAll(topic, { readUncommitted: false, count: 0, settleMs: 2500 });
      assert.deepEqual(before, []);
      const raw = await readAll(topic, { readUncommitted: true, count: 9 });
      assert.equal(raw.length, 9);
      await txn.commit();
    } finally {
      await p.disconnect();
    }
    const got = await readAll(topic, { readUncommitted: false, count: 9 });
    assert.deepEqual(got.map((r) => [r.partition, r.value]),
      [0, 1, 2].flatMap((part) => vals(`p${part}-`, 3).map((v) => [part, v])));
  });

  test('sendOffsets commits the group offsets with the transaction, and only then', T, async () => {
    const topic = await createTopic(unique('jstxs'));
    const input = await createTopic(unique('jstxs-in'), 2);
    const groupId = unique('jstxg');
    const fetch = () => withAdmin((a) => a.fetchOffsets({ groupId, topics: [input] }));
    const p = await txnProducer();
    try {
      let txn = await p.transaction();
      await txn.send({ topic, messages: msgs('x', 2) });
      await txn.sendOffsets({ consumerGroupId: groupId,
        topics: [{ topic: input, partitions: [{ partition: 0, offset: '7' }, { partition: 1, offset: '3' }] }] });
      const pending = await fetch();
      assert.deepEqual(pending[0].partitions.map((x) => Number(x.offset)).sort(), [-1, -1],
        'transactional offsets must not be visible before the commit');
      await txn.commit();
      let committed = await fetch();
      assert.deepEqual(Object.fromEntries(committed[0].partitions.map((x) => [x.partition, Number(x.offset)])), { 0: 7, 1: 3 });
      // An aborted transaction leaves the committed offsets alone.
      txn = await p.transaction();
      await txn.send({ topic, messages: msgs('y', 2) });
      await txn.sendOffsets({ consumerGroupId: groupId, topics: [{ topic: input, partitions: [{ partition: 0, offset: '99' }] }] });
      await txn.abort();
      committed = await fetch();
      assert.deepEqual(Object.fromEntries(committed[0].partitions.map((x) => [x.partition, Number(x.offset)])), { 0: 7, 1: 3 });
    } finally {
      await p.disconnect();
    }
    const got = await readAll(topic, { readUncommitted: false, count: 2 });
    assert.deepEqual(got.map((r) => r.value), vals('x', 2));
  });

  test('a second producer with the same transactionalId fences the first', T, async () => {
    const topic = await createTopic(unique('jstxf'));
    const id = unique('jstx');
    const p1 = await txnProducer(id);
    let p2;
    try {
      const t1 = await p1.transaction();
      await t1.send({ topic, messages: [{ value: 'first', partition: 0 }] });
      p2 = await txnProducer(id);
      const t2 = await p2.transaction(); // InitProducerId: new epoch, p1's transaction aborted
      await t2.send({ topic, messages: [{ value: 'second', partition: 0 }] });
      // The zombie can neither write nor commit.
      await assert.rejects(t1.send({ topic, messages: [{ value: 'zombie', partition: 0 }] }).then(() => t1.commit()),
        (e) => /INVALID_PRODUCER_EPOCH|PRODUCER_FENCED|fenced|epoch/i.test(`${e.type} ${e.message}`) || assert.fail(`${e.type}: ${e.message}`));
      await t2.commit();
    } finally {
      await p1.disconnect();
      if (p2) await p2.disconnect();
    }
    const got = await readAll(topic, { readUncommitted: false, count: 1 });
    assert.deepEqual(got.map((r) => r.value), ['second']);
    const raw = await readAll(topic, { readUncommitted: true, count: 2 });
    assert.deepEqual(raw.map((r) => r.value), ['first', 'second'], 'the zombie record must not reach the log');
  });
});
