// kafkajs 2.2 consumer groups against Runnel: members share partitions, every record is
// read once and committed, a member leaving hands its partitions over, a new consumer
// resumes from the committed offsets, and the admin group APIs (list, describe, fetch,
// set, reset and delete offsets, delete groups).
'use strict';

const { test, describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Kafka, logLevel } = require('kafkajs');
const { Broker, unique } = require('./broker.js');

const T = { timeout: 60000 };
let broker;
let kafka;

function client(b = broker, clientId = 'runnel-js-groups') {
  return new Kafka({
    clientId,
    brokers: [b.bootstrap],
    logLevel: logLevel.NOTHING,
    retry: { retries: 8, initialRetryTime: 100 },
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

async function createTopic(topic, numPartitions) {
  assert.equal(await withAdmin((a) => a.createTopics({ topics: [{ topic, numPartitions }], waitForLeaders: true })), true);
  return topic;
}

async function produce(topic, n, start = 0) {
  const producer = kafka.producer();
  await producer.connect();
  try {
    const messages = Array.from({ length: n }, (_, i) => ({ key: `k${start + i}`, value: `v${start + i}` }));
    const res = await producer.send({ topic, messages });
    return res;
  } finally {
    await producer.disconnect();
  }
}

async function waitFor(cond, ms, what) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`no ${what} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// A group member that records what it reads and its assignment.
async function member(topic, groupId, name) {
  const consumer = client(broker, name).consumer({
    groupId, sessionTimeout: 6000, heartbeatInterval: 500, rebalanceTimeout: 10000, maxWaitTimeInMs: 200,
  });
  const m = { consumer, records: [], assigned: [] };
  consumer.on(consumer.events.GROUP_JOIN, (e) => {
    m.assigned = (e.payload.memberAssignment[topic] || []).slice().sort((a, b) => a - b);
  });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    autoCommit: true,
    autoCommitInterval: 100,
    eachMessage: async ({ partition, message }) => {
      m.records.push(`${partition}:${message.offset}:${message.value.toString()}`);
    },
  });
  return m;
}

function readOnce(members, n) {
  const all = members.flatMap((m) => m.records);
  assert.equal(new Set(all).size, all.length, 'a record was read twice');
  assert.equal(all.length, n);
}

describe('kafkajs consumer groups', () => {
  before(async () => {
    broker = await new Broker({ 'group.initial.rebalance.delay.ms': 0 }).start();
    kafka = client();
  });

  after(async () => {
    const problems = await broker.stop();
    assert.deepEqual(problems, []);
  });

  test('two members share four partitions, read every record once, commit; a leaver hands over', T, async () => {
    const topic = await createTopic(unique('jsgrp'), 4);
    const groupId = unique('jsg');
    await produce(topic, 200);
    const a = await member(topic, groupId, 'js-a');
    const b = await member(topic, groupId, 'js-b');
    await waitFor(() => a.assigned.length === 2 && b.assigned.length === 2, 30000, 'two partitions each');
    assert.deepEqual([...a.assigned, ...b.assigned].sort(), [0, 1, 2, 3]);
    await waitFor(() => a.records.length + b.records.length >= 200, 20000, '200 records');
    readOnce([a, b], 200);

    const described = await withAdmin((ad) => ad.describeGroups([groupId]));
    const g = described.groups[0];
    assert.equal(g.groupId, groupId);
    assert.equal(g.state, 'Stable');
    assert.equal(g.protocolType, 'consumer');
    assert.deepEqual(g.members.map((m) => m.clientId).sort(), ['js-a', 'js-b']);
    const listed = await withAdmin((ad) => ad.listGroups());
    assert.ok(listed.groups.some((x) => x.groupId === groupId && x.protocolType === 'consumer'));

    // b leaves (LeaveGroup): a takes all four, and reads what comes next.
    await b.consumer.disconnect();
    await waitFor(() => a.assigned.length === 4, 20000, 'all four partitions');
    await produce(topic, 100, 200);
    await waitFor(() => a.records.length + b.records.length >= 300, 20000, '300 records');
    readOnce([a, b], 300);
    await a.consumer.disconnect();

    const offsets = await withAdmin((ad) => ad.fetchOffsets({ groupId, topics: [topic] }));
    const committed = offsets[0].partitions.reduce((s, p) => s + Number(p.offset), 0);
    assert.equal(committed, 300, JSON.stringify(offsets));
  });

  test('a new consumer resumes from committed offsets; admin sets, resets and deletes them', T, async () => {
    const topic = await createTopic(unique('jsres'), 2);
    const groupId = unique('jsg');
    await produce(topic, 50);
    const a = await member(topic, groupId, 'js-first');
    await waitFor(() => a.records.length >= 50, 20000, '50 records');
    await a.consumer.disconnect();
    await produce(topic, 30, 50);
    const b = await member(topic, groupId, 'js-second');
    await waitFor(() => b.records.length >= 30, 20000, '30 records');
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(b.records.map((r) => r.split(':')[2]).sort(), Array.from({ length: 30 }, (_, i) => `v${50 + i}`).sort());
    await b.consumer.disconnect();

    await withAdmin(async (ad) => {
      await ad.setOffsets({ groupId, topic, partitions: [{ partition: 0, offset: '1' }, { partition: 1, offset: '2' }] });
      let [o] = await ad.fetchOffsets({ groupId, topics: [topic] });
      assert.deepEqual(o.partitions.map((p) => [p.partition, p.offset]).sort(), [[0, '1'], [1, '2']]);
      // kafkajs commits the sentinel -2 (EARLIEST) itself; its consumers resolve it.
      await ad.resetOffsets({ groupId, topic, earliest: true });
      [o] = await ad.fetchOffsets({ groupId, topics: [topic] });
      assert.deepEqual(o.partitions.map((p) => [p.partition, p.offset]).sort(), [[0, '-2'], [1, '-2']]);
      await ad.deleteGroups([groupId]);
      const listed = await ad.listGroups();
      assert.ok(!listed.groups.some((x) => x.groupId === groupId));
      [o] = await ad.fetchOffsets({ groupId, topics: [topic] });
      assert.deepEqual(o.partitions.map((p) => p.offset), ['-1', '-1']);
    });
  });
});
