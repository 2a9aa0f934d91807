// kafkajs over TLS and SASL: SASL_SSL with PLAIN users from the broker's JAAS config,
// and a wrong password refused. Throwaway certificates are made with the openssl CLI.
'use strict';

const { test, describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { Kafka, logLevel } = require('kafkajs');
const { Broker, unique } = require('./broker.js');

const T = { timeout: 60000 };
let broker;
let saslPort;
let ca;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// A CA and a server certificate for 127.0.0.1; returns [ca.pem, keystore.pem (key+chain)].
function makeCerts(dir) {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const run = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore', timeout: 30000 });
  run('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=js-test-ca');
  fs.writeFileSync(path.join(dir, 'server.ext'), 'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n');
  run('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'server.pem', '-days', '2', '-extfile', 'server.ext');
  const keystore = path.join(dir, 'keystore.pem');
  fs.writeFileSync(keystore, fs.readFileSync(path.join(dir, 'server.key')) + fs.readFileSync(path.join(dir, 'server.pem')));
  return [path.join(dir, 'ca.pem'), keystore];
}

function client(password) {
  return new Kafka({
    clientId: 'runnel-js-security',
    brokers: [`127.0.0.1:${saslPort}`],
    ssl: { ca: [fs.readFileSync(ca)] },
    sasl: { mechanism: 'plain', username: 'alice', password },
    logLevel: logLevel.NOTHING,
    retry: { retries: 2, initialRetryTime: 100 },
    connectionTimeout: 5000,
    requestTimeout: 15000,
  });
}

describe('kafkajs over SASL_SSL', () => {
  before(async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'runnel-js-certs-'));
    let keystore;
    [ca, keystore] = makeCerts(dir);
    saslPort = await freePort();
    broker = await new Broker({
      listeners: `PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:${saslPort}`,
      'listener.security.protocol.map': 'PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL',
      'inter.broker.listener.name': 'PLAINTEXT',
      'ssl.keystore.type': 'PEM',
      'ssl.keystore.location': keystore,
      'sasl.enabled.mechanisms': 'PLAIN',
      'sasl.jaas.config': 'org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";',
      'http.listeners': '',
    }).start();
  });

  after(async () => {
    const problems = broker ? await broker.stop() : [];
    assert.deepEqual(problems, []);
  });

  test('produces and reads back offsets with PLAIN over TLS', T, async () => {
    const kafka = client('alice-secret');
    const admin = kafka.admin();
    await admin.connect();
    const topic = unique('js-sasl');
    try {
      await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
      const producer = kafka.producer();
      await producer.connect();
      const [r] = await producer.send({ topic, acks: -1, messages: [{ value: 'a' }, { value: 'b' }] });
      await producer.disconnect();
      assert.equal(r.errorCode, 0);
      const offsets = await admin.fetchTopicOffsets(topic);
      assert.equal(offsets[0].high, '2');
    } finally {
      await admin.disconnect();
    }
  });

  test('a wrong password is refused with an authentication error', T, async () => {
    const admin = client('wrong').admin();
    await assert.rejects(admin.connect(), (e) => /SASL|uthenticat/i.test(`${e.name} ${e.message}`));
  });
});
