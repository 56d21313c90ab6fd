// Shared test plumbing: starts the real switchboard binary on a free port with a fresh data
// directory, launches the system Chromium through playwright-core, records console errors and
// page errors (every test fails on them), and offers REST helpers and condition polling so the
// tests wait on state, never on fixed sleeps. `routeSocket` puts the test between a page and the
// server's WebSocket, to hold, drop or refuse traffic on cue.

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
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

// Servers still running when the test process ends (a failed test, a timeout) go with it.
const running = new Set();
process.on('exit', () => {
  for (const proc of running) proc.kill('SIGKILL');
});

/** A running switchboard: `url`, `port`, `dataDir`, `kill(signal)`, `start()` (same port/dir). */
export class Server {
  /** Starts a server on a free port with a fresh data directory; `args` are extra flags. */
  static async start(args = []) {
    const s = new Server(await freePort(), mkdtempSync(join(tmpdir(), 'sb-web-')), args);
    try {
      await s.start();
    } catch (e) {
      await s.stop();
      throw e;
    }
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
    // Every user of a test signs up from 127.0.0.1, and fixtures post hundreds of messages
    // over REST: lift the sign-up and per-user send throttles, unless the test is about them
    // and sets its own (a flag may be given only once).
    const defaults = Object.entries(DEFAULT_FLAGS).flatMap(([flag, value]) => (this.args.includes(flag) ? [] : [flag, value]));
    const args = ['--listen', `127.0.0.1:${this.port}`, '--data', this.dataDir, '--heartbeat-ms', '5000', ...defaults, ...this.args];
    const proc = spawn(BIN, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
    });
    this.proc = proc;
    running.add(proc);
    const keep = (d) => (this.log = (this.log + d).slice(-20000));
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    proc.exited = new Promise((r) => proc.on('exit', r));
    proc.on('exit', (code, signal) => {
      running.delete(proc);
      if (!this.stopping) process.stderr.write(`switchboard on ${this.port} exited unexpectedly: code ${code} signal ${signal}\n${this.log}\n`);
    });
    try {
      await until(async () => proc.exitCode !== null || (await fetch(`${this.url}/readyz`)).ok, { timeout: 20000, what: 'server ready' });
      if (proc.exitCode !== null) throw new Error(`switchboard exited (${proc.exitCode}): ${this.log}`);
    } catch (e) {
      await this.kill();
      throw e;
    }
  }

  /**
   * Stops the process with `signal` (SIGKILL by default) and waits for it to be gone; one that
   * is still there after `graceMs` (a drain that does not end) gets SIGKILL.
   */
  async kill(signal = 'SIGKILL', graceMs = 15000) {
    this.stopping = true;
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode) return;
    proc.kill(signal);
    let timer;
    const late = new Promise((r) => (timer = setTimeout(r, graceMs)));
    if ((await Promise.race([proc.exited.then(() => 'gone'), late])) !== 'gone') {
      process.stderr.write(`switchboard on ${this.port} ignored ${signal} for ${graceMs} ms: SIGKILL\n`);
      proc.kill('SIGKILL');
      await proc.exited;
    }
    clearTimeout(timer);
  }

  /** Stops the server and deletes its data directory. */
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

  /**
   * Creates a room as `owner` with `members` in it (both as `register` returns them): they
   * are invited, as `members` of a new room are, and each accepts. Not for dms (whose other
   * person is in at once).
   */
  async roomWith(owner, { name, kind = 'public', members = [] }) {
    const room = await this.api('POST', '/v1/rooms', { token: owner.token, body: { name, kind, members: members.map((m) => m.user.id) } });
    for (const m of members) await this.api('POST', `/v1/rooms/${room.id}/join`, { token: m.token });
    return room;
  }
}

/** Flags every test server gets unless its test passes them itself. */
const DEFAULT_FLAGS = {
  '--signups-per-ip-per-hour': '10000', '--user-sends-per-sec': '10000', '--user-sends-burst': '10000',
  '--room-sends-per-sec': '10000', '--room-sends-burst': '10000', '--duplicate-max': '0', '--room-joins-per-min': '0',
};

/**
 * A regexp for `openPage`'s `allow` that matches the console error the browser logs for one
 * expected refusal: a response with `status` to a request whose path (and query) is `path`
 * (a string, matched exactly, or a RegExp source for the path).
 */
export function allowStatus(status, path) {
  const p = typeof path === 'string' ? path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') : path.source;
  return new RegExp(`^Failed to load resource: the server responded with a status of ${status} \\([^)]*\\) \\(http://[^/]+${p}\\)$`);
}

/** The test file's server and browser (live bindings, set by `useServerAndBrowser`). */
export let server;
export let browser;

/**
 * Starts the file's server (with `args`) and browser before its tests, then runs `setup` (the
 * file's own fixtures, which may use both), and stops them after.
 */
export function useServerAndBrowser(args = [], setup = async () => {}) {
  before(async () => {
    server = await Server.start(args);
    browser = await launchBrowser();
    await setup();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });
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
 * (say, connection-refused errors the browser logs itself while the server is down); each is
 * matched against the message followed by ` (<url>)` where the browser names one, so an
 * allowance can be pinned to one request.
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
    const where = msg.location() && msg.location().url ? ` (${msg.location().url})` : '';
    const text = msg.text() + where;
    if (page.allow.some((re) => re.test(text))) return;
    page.problems.push(`console ${type}: ${text}`);
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
 * any console error or warning or page error, and a failure lists what the pages reported
 * besides its own error. The pages' contexts are closed afterwards.
 */
export function pageTest(name, fn) {
  return test(name, async (t) => {
    pagesOfTest.clear();
    let failure = null;
    try {
      await fn(t);
    } catch (e) {
      failure = e;
    }
    const pages = [...pagesOfTest];
    pagesOfTest.clear();
    for (const p of pages) await p.context().close().catch(() => {});
    const problems = pages.flatMap((p) => p.problems);
    // The test's own failure is what fails it; what the pages reported goes with it (as a
    // diagnostic: the runner prints an error's stack, fixed when it was made).
    if (failure) {
      if (problems.length) t.diagnostic(`page problems:\n${problems.join('\n')}`);
      throw failure;
    }
    if (problems.length) throw new Error(`page problems:\n${problems.join('\n')}`);
  });
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
/** Submits each of `bodies` from the composer in one go (no await in between). */
export function submitAll(page, bodies) {
  return page.evaluate((list) => {
    const input = document.querySelector('#composer-input');
    const form = document.querySelector('#composer');
    for (const b of list) {
      input.value = b;
      form.requestSubmit();
    }
  }, bodies);
}

export async function send(page, text) {
  const input = page.locator('#composer-input');
  await input.fill(text);
  await input.press('Enter');
}

export function artifactsDir() {
  mkdirSync(ARTIFACTS, { recursive: true });
  return ARTIFACTS;
}

/**
 * Routes the page's WebSockets through the test. Returns a controller:
 * - `mode`: what a new connection gets: 'pass' (the server), 'refuse' (closed at once with
 *   1011), 'hang' (opened, never answered);
 * - `filter(frame)`: sees each server frame; return 'drop' to drop it or 'hold' to keep it
 *   until `release()`;
 * - `maxFrame`: a page frame over this many bytes closes the connection with 1009, as a server
 *   with that max_frame_bytes does, but every time (the real server's 1009 sometimes reaches
 *   the page as a 1006: its close frame is lost to a TCP reset);
 * - `sent`, `received`: the frames so far (parsed); `closes`: the server's close codes;
 *   `connections`: how many the page opened;
 * - `close(code, reason)`: closes the current connection as if the server had, with `code`.
 */
export async function routeSocket(page) {
  const validCode = (c) => c === 1000 || c === 1001 || c === 1008 || c === 1009 || c === 1011 || (c >= 3000 && c < 5000);
  const ctl = {
    mode: 'pass',
    filter: () => null,
    maxFrame: Infinity,
    sent: [],
    received: [],
    closes: [],
    connections: 0,
    held: [],
    current: null,
    release() {
      for (const { ws, m } of ctl.held.splice(0)) ws.send(m);
    },
    async close(code = 1011, reason = 'closed by the test') {
      const c = ctl.current;
      if (!c) return;
      ctl.current = null;
      c.closing = true;
      await c.ws.close({ code, reason }).catch(() => {});
      await c.server.close({ code: 1000 }).catch(() => {});
    },
  };
  await page.routeWebSocket(/\/v1\/ws$/, (ws) => {
    ctl.connections += 1;
    if (ctl.mode === 'refuse') {
      ws.close({ code: 1011, reason: 'refused by the test' }).catch(() => {});
      return;
    }
    if (ctl.mode === 'hang') {
      ws.onMessage(() => {});
      return;
    }
    const server = ws.connectToServer();
    const conn = { ws, server };
    ctl.current = conn;
    ws.onMessage((m) => {
      if (conn.closing) return;
      if (Buffer.byteLength(m) > ctl.maxFrame) {
        ctl.closes.push(1009);
        conn.closing = true;
        if (ctl.current === conn) ctl.current = null;
        ws.close({ code: 1009, reason: 'frame too large' }).catch(() => {});
        server.close({ code: 1000 }).catch(() => {});
        return;
      }
      ctl.sent.push(JSON.parse(m));
      server.send(m);
    });
    server.onMessage((m) => {
      const frame = JSON.parse(m);
      ctl.received.push(frame);
      const verdict = ctl.filter(frame);
      if (verdict === 'hold') ctl.held.push({ ws, m });
      else if (verdict !== 'drop') ws.send(m);
    });
    server.onClose((code, reason) => {
      if (conn.closing) return;
      ctl.closes.push(code);
      if (ctl.current === conn) ctl.current = null;
      ws.close(validCode(code) ? { code, reason } : {}).catch(() => {});
    });
    ws.onClose((code, reason) => {
      if (conn.closing) return;
      if (ctl.current === conn) ctl.current = null;
      server.close(validCode(code) ? { code, reason } : {}).catch(() => {});
    });
  });
  return ctl;
}
