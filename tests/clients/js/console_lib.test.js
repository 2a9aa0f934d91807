// The web console's pure helpers (crates/broker/console/lib.js) under node: how record
// payloads are shown, Prometheus text parsed, durations and sizes written.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { pathToFileURL } = require('node:url');

const LIB = pathToFileURL(path.join(__dirname, '..', '..', '..', 'crates', 'broker', 'console', 'lib.js')).href;

test('record payloads: JSON pretty, text, hex, null, and bytes that are not UTF-8', async () => {
  const { render, unbase64 } = await import(LIB);
  const b = (s) => new TextEncoder().encode(s);
  assert.deepEqual(render(b('{"a":[1,2]}'), 'auto'), { text: '{\n  "a": [\n    1,\n    2\n  ]\n}', kind: 'json' });
  assert.deepEqual(render(b('{"a":1}'), 'text'), { text: '{"a":1}', kind: 'text' });
  assert.deepEqual(render(b('42'), 'auto'), { text: '42', kind: 'text' }, 'a bare number is text, not an object');
  assert.deepEqual(render(b('not json'), 'json'), { text: 'not json', kind: 'text' });
  assert.deepEqual(render(b('hi'), 'hex'), { text: '68 69', kind: 'hex' });
  assert.deepEqual(render(new Uint8Array([0xff, 0x00]), 'text'), { text: 'ff 00', kind: 'hex' });
  assert.deepEqual(render(null, 'auto'), { text: 'null', kind: 'null' });
  assert.deepEqual([...unbase64('//4A')], [0xff, 0xfe, 0x00]);
  assert.equal(unbase64(null), null);
});

test('Prometheus text: names, labels (escaped quotes too) and values', async () => {
  const { parseMetrics } = await import(LIB);
  const m = parseMetrics([
    '# HELP runnel_topics Topics.',
    '# TYPE runnel_topics gauge',
    'runnel_topics 3',
    'runnel_topic_bytes_in_total{topic="a \\"b\\""} 1.5e3',
    'runnel_log_dir_offline{log_dir="C:\\\\data\\n1"} 0',
    '',
  ].join('\n'));
  assert.deepEqual(m, [
    { name: 'runnel_topics', labels: {}, value: 3 },
    { name: 'runnel_topic_bytes_in_total', labels: { topic: 'a "b"' }, value: 1500 },
    { name: 'runnel_log_dir_offline', labels: { log_dir: 'C:\\data\n1' }, value: 0 },
  ]);
});

test('durations and sizes as an operator reads them', async () => {
  const { duration, bytes, rate, num } = await import(LIB);
  assert.equal(duration('604800000'), '7 d');
  assert.equal(duration(3600000), '1 h');
  assert.equal(duration(90000), '90 s');
  assert.equal(duration(1500), '1500 ms');
  assert.equal(duration('-1'), '-1');
  assert.equal(bytes(0), '0 B');
  assert.equal(bytes(1536), '1.5 KiB');
  assert.equal(bytes(null), '–');
  assert.equal(rate(2500, ' rec/s'), '2.5k rec/s');
  assert.equal(num(1234567), '1,234,567');
});
