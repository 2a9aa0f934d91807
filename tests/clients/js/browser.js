// Headless Chromium for the console's browser tests: the system's `chromium` (Debian
// package) driven by playwright-core (no browser download), and what every such test
// checks: no request leaves for another host, and no error shows in the page.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const CHROMIUM = process.env.CHROMIUM_BIN || ['/usr/bin/chromium', '/usr/bin/chromium-browser']
  .find((p) => fs.existsSync(p));
let playwright = null;
try { playwright = require('playwright-core'); } catch { /* reported as the skip reason */ }

/** Why the browser tests cannot run here, or false. */
const browserSkip = !CHROMIUM ? 'no chromium (apt-get install chromium; scripts/test.sh installs it)'
  : !playwright ? 'playwright-core is not installed (npm ci in tests/clients/js)' : false;

function launch() {
  return playwright.chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
}

/** Where screenshots go: $RUNNEL_ARTIFACTS/console, or a new temp dir. */
function screenshotDir() {
  const dir = path.join(process.env.RUNNEL_ARTIFACTS || fs.mkdtempSync(path.join(os.tmpdir(), 'runnel-')), 'console');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** A 1440x900 context whose requests to anything but `origin` are aborted and listed
 * in `foreign`; every URL requested is in `seen`. */
async function guardedContext(browser, origin, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1, ...options });
  const seen = [];
  const foreign = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    seen.push(url);
    if (url.startsWith(`${origin}/`) || url.startsWith('data:')) return route.continue();
    foreign.push(url);
    return route.abort();
  });
  return { context, seen, foreign };
}

/** Collects uncaught exceptions and console errors (a CSP violation, a script error),
 * except Chromium's "Failed to load resource" line for a 4xx a test provokes. */
function pageErrors(page) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text());
  });
  return errors;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A guarded page on `origin` (see guardedContext; `options` are the context's, e.g.
 * httpCredentials) that accepts dialogs and collects page errors, with `shot(name)` (a
 * screenshot in `shots`) and `open(hash)` (navigates and waits for the view to have
 * rendered). */
async function consolePage(browser, origin, shots, options = {}) {
  const { context, seen, foreign } = await guardedContext(browser, origin, options);
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const errors = pageErrors(page);
  page.on('dialog', (d) => d.accept());
  const shot = (name, fullPage = true) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage });
  const open = async (hash) => {
    await page.evaluate((h) => { document.getElementById('view').dataset.ready = ''; location.hash = h; }, hash);
    await page.waitForSelector('#view[data-ready="true"]');
  };
  return { page, seen, foreign, errors, shot, open };
}

module.exports = { browserSkip, launch, screenshotDir, guardedContext, pageErrors, consolePage, sleep };
