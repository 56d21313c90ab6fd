// Shared test plumbing: starts the real switchboard binary on a free port with a fresh data
// directory, launches the system Chromium through playwright-core, records console errors and
// page errors (every test fails on them), and offers REST helpers and condition polling so the
// tests wait on state, never on fixed sleeps.

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { chromium } from 'playwright-core';

const here = fileURLToPath(new URL('.', import.meta.url));
export const REPO = resolve(here, '../../..');
export const ARTIFACTS = process.env.WEB_ARTIFACTS || join(REPO, 'target', 'web-artifacts');

export const BIN = process.env.SWITCHBOARD_BIN;
if (!BIN) throw new Error('set SWITCHBOARD_BIN to the switchboard binary (scripts/web-test does)');

export const PASSWORD = 'correct horse battery';

/** A port the OS says is free right now. */
export function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

/** Polls `fn` until it returns a truthy value (returned), or fails after `timeout` ms. */
export async function until(fn, { timeout = 15000, interval = 50, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** A running switchboard: `url`, `port`, `dataDir`, `kill(signal)`, `start()` (same port/dir). */
export class Server {
  /** Starts a server on a free port with a fresh data directory; `args` are extra flags. */
  static async start(args = []) {
    const s = new Server(await freePort(), mkdtempSync(join(tmpdir(), 'sb-web-')), args);
    await s.start();
    return s;
  }

  constructor(port, dataDir, args = []) {
    this.port = port;
    this.dataDir = dataDir;
    this.args = args;
    this.url = `http://127.0.0.1:${port}`;
    this.proc = null;
    this.log = '';
  }

  async start() {
    this.stopping = false;
    const args = ['--listen', `127.0.0.1:${this.port}`, '--data', this.dataDir, '--heartbeat-ms', '5000', ...this.args];
    const proc = spawn(BIN, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
    });
    this.proc = proc;
    const keep = (d) => (this.log = (this.log + d).slice(-20000));
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    proc.exited = new Promise((r) => proc.on('exit', r));
    proc.on('exit', (code, signal) => {
      if (!this.stopping) process.stderr.write(`switchboard on ${this.port} exited unexpectedly: code ${code} signal ${signal}\n${this.log}\n`);
    });
    await until(
      async () => {
        if (proc.exitCode !== null) throw new Error(`switchboard exited (${proc.exitCode}): ${this.log}`);
        const res = await fetch(`${this.url}/readyz`);
        return res.ok;
      },
      { timeout: 20000, what: 'server ready' },
    );
  }

  /** Kills the process (SIGKILL by default) and waits for it to be gone. */
  async kill(signal = 'SIGKILL') {
    this.stopping = true;
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode) return;
    this.proc.kill(signal);
    await this.proc.exited;
  }

  async stop() {
    await this.kill('SIGTERM');
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** A REST call; returns parsed JSON (or null), throwing on a non-2xx status. */
  async api(method, path, { token, body } = {}) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(this.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    const data = text ? JSON.parse(text) : null;
    if (!res.ok) throw new Error(`${method} ${path} -> ${res.status} ${text}`);
    return data;
  }

  /** Registers a user over REST: {user, token}. */
  register(username, password = PASSWORD) {
    return this.api('POST', '/v1/users', { body: { username, password } });
  }
}

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export function launchBrowser() {
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS, headless: true });
}

/**
 * A page in a new browser context, with its console errors, warnings and page errors
 * collected in `page.problems`. `allow` is a list of regexps for messages that are expected
 * (say, connection-refused errors the browser logs itself while the server is down).
 */
export async function openPage(browser, { viewport = { width: 1280, height: 800 }, colorScheme = 'light', allow = [] } = {}) {
  const context = await browser.newContext({ viewport, colorScheme, deviceScaleFactor: 1 });
  const page = await context.newPage();
  pagesOfTest.add(page);
  page.problems = [];
  page.allow = allow;
  page.on('console', (msg) => {
    const type = msg.type();
    if (type !== 'error' && type !== 'warning') return;
    const text = msg.text();
    if (page.allow.some((re) => re.test(text))) return;
    const where = msg.location() && msg.location().url ? ` (${msg.location().url})` : '';
    page.problems.push(`console ${type}: ${text}${where}`);
  });
  page.on('pageerror', (err) => page.problems.push(`page error: ${err.message}`));
  page.on('dialog', async (d) => {
    page.problems.push(`dialog opened: ${d.type()} ${d.message()}`);
    await d.dismiss().catch(() => {});
  });
  return page;
}

const pagesOfTest = new Set();

/**
 * A node:test test whose pages (opened with openPage) are checked when it ends: it fails on
 * any console error or warning or page error, and a failure lists what the pages reported.
 * The pages' contexts are closed afterwards.
 */
export function pageTest(name, fn) {
  return test(name, async (t) => {
    pagesOfTest.clear();
    try {
      await fn(t);
    } catch (e) {
      const problems = [...pagesOfTest].flatMap((p) => p.problems);
      if (problems.length) e.message += `\npage problems:\n${problems.join('\n')}`;
      throw e;
    } finally {
      const pages = [...pagesOfTest];
      pagesOfTest.clear();
      for (const p of pages) await p.context().close().catch(() => {});
      for (const p of pages) assertClean(p);
    }
  });
}

/** Fails if the page logged any console error or warning or threw. */
export function assertClean(page) {
  if (page.problems.length) throw new Error(`page problems:\n${page.problems.join('\n')}`);
}

/** Registers `username` through the sign-up form; resolves once the chat shows. */
export async function signUpViaUI(page, server, username, password = PASSWORD) {
  await page.goto(server.url + '/');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.locator('#chat').waitFor({ state: 'visible' });
  await waitOnline(page);
}

/** Signs in through the form. */
export async function logInViaUI(page, server, username, password = PASSWORD) {
  await page.goto(server.url + '/');
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#chat').waitFor({ state: 'visible' });
  await waitOnline(page);
}

/** Waits until the socket is connected (the root element says so). */
export async function waitOnline(page, timeout = 15000) {
  await page.waitForFunction(() => document.documentElement.dataset.connection === 'online', null, { timeout });
}

/** The confirmed messages' bodies in the open room, in display order. */
export function messageBodies(page) {
  return page.$$eval('#messages > li.msg .msg-body', (els) => els.map((e) => e.textContent));
}

/** Opens a room by clicking its entry in the room list. */
export async function openRoom(page, name) {
  await page.locator('.room-link', { hasText: name }).first().click();
  await page.locator('#room-title', { hasText: name }).waitFor();
  await page.waitForFunction(() => document.querySelector('#history-status')?.dataset.state !== 'loading');
}

/** Sends `text` from the composer with Enter. */
export async function send(page, text) {
  const input = page.locator('#composer-input');
  await input.fill(text);
  await input.press('Enter');
}

export function artifactsDir() {
  mkdirSync(ARTIFACTS, { recursive: true });
  return ARTIFACTS;
}
