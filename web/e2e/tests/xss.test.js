// Hostile message text is shown as text and runs nothing: markup, script tags, javascript:
// "links" (bare and markdown-style), an RTL override and zalgo text. Checked both for messages
// arriving live and for messages loaded from history after a reload.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { pageTest, Server, launchBrowser, openPage, logInViaUI, openRoom, send, messageBodies, until, artifactsDir } from '../lib/harness.js';

const ZALGO = 'Z' + '\u0335\u0322\u031b\u032a\u0347\u0320\u0330\u031d\u0317\u0332\u0319\u033b\u032d\u032f\u0359\u0313\u033f\u0344\u0306\u033d\u034a\u0310\u0308\u0311\u0305\u035b\u033f\u034b\u035c\u035d'.repeat(3) + 'algo';
const PAYLOADS = [
  '<img src=x onerror=alert(1)>',
  '<script>alert(1)</script>',
  'javascript:alert(1)',
  '[x](javascript:alert(1))',
  '<a href="javascript:alert(1)">click me</a>',
  '<img src=x onerror="window.__pwned=1">',
  '<style>body{display:none}</style><b>bold?</b>',
  'https://example.com/ok"><img src=x onerror=alert(1)>',
  'abc \u202Etxt.exe\u202C and back',
  '\u202Eoverride never closed',
  ZALGO,
  'after the tricks: plain text',
];

let server;
let browser;
let room;

before(async () => {
  server = await Server.start();
  browser = await launchBrowser();
  const mallory = await server.register('mallory');
  const alice = await server.register('alice');
  room = await server.api('POST', '/v1/rooms', { token: mallory.token, body: { name: 'lobby', kind: 'public', members: [alice.user.id] } });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function checkInert(page) {
  // Exactly the text, nothing else.
  assert.deepEqual(await messageBodies(page), PAYLOADS);
  const report = await page.evaluate(() => {
    const list = document.querySelector('#messages');
    return {
      injected: list.querySelectorAll('.msg-body img, .msg-body script, .msg-body style, .msg-body iframe, .msg-body b, .msg-body svg').length,
      badLinks: [...document.querySelectorAll('a[href]')].filter((a) => !/^https?:$/.test(new URL(a.href, location.href).protocol)).map((a) => a.href),
      jsHrefs: [...document.querySelectorAll('[href]')].filter((e) => /^\s*javascript:/i.test(e.getAttribute('href'))).length,
      pwned: window.__pwned === 1,
      links: [...list.querySelectorAll('.msg-body a')].map((a) => ({ href: a.getAttribute('href'), rel: a.rel, target: a.target, text: a.textContent })),
      bodyVisible: getComputedStyle(document.body).display !== 'none',
    };
  });
  assert.equal(report.injected, 0, 'no elements created from message text');
  assert.deepEqual(report.badLinks, []);
  assert.equal(report.jsHrefs, 0);
  assert.equal(report.pwned, false);
  assert.ok(report.bodyVisible);
  // The one real URL is a safe link, cut before the quote.
  assert.deepEqual(report.links, [{ href: 'https://example.com/ok', rel: 'noopener noreferrer nofollow', target: '_blank', text: 'https://example.com/ok' }]);

  // Bidi overrides stay inside their message: every other message still starts at its left
  // edge, and every body is an isolated, clipped box.
  const layout = await page.evaluate(() =>
    [...document.querySelectorAll('#messages > li')].map((li) => {
      const body = li.querySelector('.msg-body');
      const s = getComputedStyle(body);
      const first = body.firstChild.nodeType === Node.TEXT_NODE ? body.firstChild : body.firstChild.firstChild;
      const range = document.createRange();
      range.setStart(first, 0);
      range.setEnd(first, 1);
      return {
        isolate: s.unicodeBidi,
        overflow: s.overflow,
        firstCharOffset: Math.round(range.getBoundingClientRect().left - body.getBoundingClientRect().left),
        height: li.getBoundingClientRect().height,
      };
    }),
  );
  layout.forEach((l, i) => {
    assert.equal(l.isolate, 'isolate');
    assert.equal(l.overflow, 'hidden');
    if (!PAYLOADS[i].startsWith('\u202E')) assert.equal(l.firstCharOffset, 0, `message ${i} starts at the left`);
  });
  // Zalgo is clipped to its line instead of covering its neighbours.
  const zalgo = layout[PAYLOADS.indexOf(ZALGO)];
  assert.ok(zalgo.height < 80, `zalgo message is ${zalgo.height}px tall`);
}

pageTest('hostile messages are shown as text and run nothing', async () => {
  const page = await openPage(browser);
  await logInViaUI(page, server, 'alice');
  await openRoom(page, 'lobby');
  // Sent from the page itself, one by one, each shown from its ack or its live event.
  for (const p of PAYLOADS) {
    await send(page, p);
    await until(async () => (await page.locator('#pending > li').count()) === 0, { what: 'acked' });
  }
  await until(async () => (await messageBodies(page)).length === PAYLOADS.length, { what: 'all shown' });
  await checkInert(page);
  await page.screenshot({ path: join(artifactsDir(), 'xss.png') });

  // The same messages, loaded from history by someone else.
  const other = await openPage(browser);
  await logInViaUI(other, server, 'mallory');
  await openRoom(other, 'lobby');
  await until(async () => (await messageBodies(other)).length === PAYLOADS.length, { what: 'history shown' });
  await checkInert(other);

  // Editing one into markup changes only its text.
  const target = page.locator('#messages > li.msg', { hasText: 'after the tricks' });
  await target.hover();
  await target.getByRole('button', { name: 'Edit message' }).click();
  const box = page.getByRole('textbox', { name: 'Edit message' });
  await box.fill('<img src=x onerror=alert(2)>edited');
  await box.press('Enter');
  await other.locator('#messages > li.msg', { hasText: '<img src=x onerror=alert(2)>edited' }).waitFor();
  assert.equal(await other.locator('#messages img').count(), 0);
  assert.equal(room.kind, 'public');
});
