// Start, stop, kill and restart a Runnel broker for the kafkajs suite.
// The broker is `$RUNNEL_BIN server` on 127.0.0.1 with a port it picks (port 0); it prints
// one stdout line `listening on 127.0.0.1:PORT` when ready (and, with `http.listeners`
// set, a second one `http listening on 127.0.0.1:PORT`). stderr goes to a log file.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');

const LISTENING = /^listening on 127\.0\.0\.1:(\d+)\s*$/;
const HTTP_LISTENING = /^http listening on 127\.0\.0\.1:(\d+)\s*$/m;
const START_TIMEOUT_MS = 30000;
const STOP_TIMEOUT_MS = 20000;

// Every broker started, killed at exit if the test process is torn down abruptly.
const all = new Set();

function unique(prefix = 't') {
  return `${prefix}-${crypto.randomBytes(5).toString('hex')}`;
}

class Broker {
  constructor(configs = {}) {
    const bin = process.env.RUNNEL_BIN;
    if (!bin) throw new Error('RUNNEL_BIN is not set (scripts/test.sh sets it to the built runnel binary)');
    this.bin = bin;
    this.workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'runnel-js-'));
    this.dataDir = path.join(this.workdir, 'data');
    this.configs = configs;
    this.proc = null;
    this.port = null;
    this.starts = 0;
  }

  get bootstrap() {
    if (!this.port) throw new Error('broker not started');
    return `127.0.0.1:${this.port}`;
  }

  start() {
    all.add(this);
    this.starts += 1;
    this.logPath = path.join(this.workdir, `broker.${this.starts}.log`);
    const args = ['server', '--set', 'listeners=PLAINTEXT://127.0.0.1:0', '--set', `log.dirs=${this.dataDir}`];
    for (const [k, v] of Object.entries(this.configs)) args.push('--set', `${k}=${v}`);
    const log = fs.openSync(this.logPath, 'w');
    const proc = spawn(this.bin, args, { stdio: ['ignore', 'pipe', log] });
    fs.closeSync(log);
    this.proc = proc;
    this.exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    return new Promise((resolve, reject) => {
      let buf = '';
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        reject(new Error(`broker printed no 'listening on' line within ${START_TIMEOUT_MS} ms\n${this.logTail()}`));
      }, START_TIMEOUT_MS);
      // With `http.listeners` set, a second line `http listening on 127.0.0.1:PORT` follows.
      const wantHttp = Boolean(this.configs['http.listeners']);
      const onData = (chunk) => {
        buf += chunk.toString();
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        const m = LISTENING.exec(buf.slice(0, nl));
        if (!m) {
          clearTimeout(timer);
          proc.kill('SIGKILL');
          reject(new Error(`first stdout line was ${JSON.stringify(buf.slice(0, nl))}\n${this.logTail()}`));
          return;
        }
        let httpPort = null;
        if (wantHttp) {
          const h = HTTP_LISTENING.exec(buf.slice(nl + 1));
          if (!h) return; // wait for the second line
          httpPort = Number(h[1]);
        }
        clearTimeout(timer);
        proc.stdout.off('data', onData);
        proc.stdout.resume(); // drain anything else
        this.port = Number(m[1]);
        this.httpPort = httpPort;
        resolve(this);
      };
      proc.stdout.on('data', onData);
      proc.once('exit', (code) => {
        clearTimeout(timer);
        if (!this.port) reject(new Error(`broker exited with ${code} before listening\n${this.logTail()}`));
      });
    });
  }

  alive() {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async kill9() {
    if (this.alive()) {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
    this.port = null;
  }

  // SIGTERM; resolves to the exit code, or kills and throws if the broker does not exit in time.
  async terminate() {
    if (!this.alive()) throw new Error(`broker is not running\n${this.logTail()}`);
    this.proc.kill('SIGTERM');
    let timer;
    const timeout = new Promise((resolve) => { timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS); });
    const r = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    this.port = null;
    if (r === null) {
      this.proc.kill('SIGKILL');
      await this.exited;
      throw new Error(`broker did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM\n${this.logTail()}`);
    }
    return r.code;
  }

  // Teardown: stop the broker; report a panic in its logs or an unexpected death.
  async stop() {
    const problems = [];
    if (this.proc && !this.alive() && this.port) problems.push('broker died unexpectedly');
    if (this.alive()) {
      try { await this.terminate(); } catch (e) { problems.push(e.message); }
    }
    for (const f of fs.readdirSync(this.workdir)) {
      if (!f.endsWith('.log')) continue;
      const text = fs.readFileSync(path.join(this.workdir, f), 'utf8');
      for (const line of text.split('\n')) if (line.includes('panicked at')) problems.push(`${f}: ${line}`);
    }
    if (problems.length === 0) fs.rmSync(this.workdir, { recursive: true, force: true });
    return problems;
  }

  logTail(n = 30) {
    try {
      const lines = fs.readFileSync(this.logPath, 'utf8').split('\n');
      return `--- last lines of ${this.logPath} ---\n${lines.slice(-n).join('\n')}`;
    } catch {
      return '(no broker log)';
    }
  }
}

function killAll() {
  for (const b of all) if (b.alive()) b.proc.kill('SIGKILL');
}
process.on('exit', killAll);
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    killAll();
    process.exit(1);
  });
}

module.exports = { Broker, unique };
