// kafkajs against a replicated Runnel cluster, driven by tests/clients/python/test_cluster.py:
//   node cluster_client.js BOOTSTRAP TOPIC
// Produces 100 records (acks=all), prints "ready", waits for "go" on stdin (the test kills
// the partition leader meanwhile), produces 100 more, then reads all of them back with a
// consumer group and prints {"values": [...]} on one line.
'use strict';

const readline = require('node:readline');
const { Kafka, logLevel } = require('kafkajs');

async function main() {
  const [bootstrap, topic] = process.argv.slice(2);
  const kafka = new Kafka({
    clientId: 'runnel-js-cluster',
    brokers: bootstrap.split(','),
    logLevel: logLevel.NOTHING,
    retry: { retries: 30, initialRetryTime: 200, maxRetryTime: 2000 },
    connectionTimeout: 3000,
    requestTimeout: 15000,
  });
  const producer = kafka.producer({ metadataMaxAge: 1000 });
  await producer.connect();
  const send = async (from, to) => {
    for (let i = from; i < to; i++) {
      await producer.send({ topic, acks: -1, messages: [{ value: `js${i}`, partition: 0 }] });
    }
  };
  await send(0, 100);
  process.stdout.write('ready\n');
  const rl = readline.createInterface({ input: process.stdin });
  await new Promise((resolve) => rl.once('line', resolve));
  rl.close();
  await send(100, 200);
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: `js-cluster-${Date.now()}`, metadataMaxAge: 1000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const values = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${values.length} of 200 records`)), 60000);
    consumer.run({
      eachMessage: async ({ message }) => {
        values.push(message.value.toString());
        if (values.length >= 200) {
          clearTimeout(timer);
          resolve();
        }
      },
    }).catch(reject);
  });
  await consumer.disconnect();
  process.stdout.write(JSON.stringify({ values }) + '\n');
}

main().then(() => process.exit(0), (e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
