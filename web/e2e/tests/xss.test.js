// Hostile message text is shown as text and runs nothing: markup, script tags, javascript:
// "links" (bare and markdown-style), an RTL override and zalgo text. Checked both for messages
// arriving live and for messages loaded from history after a reload. A hostile room name, too:
// in the room list, the header, the composer's placeholder, dialog titles, toasts and an
// invitation, where it must also not reorder the words around it. (What really protects the page is that it builds
// nothing from HTML strings and the CSP; every test here also fails on any console error,
// which is where a CSP violation would show.)

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { pageTest, openPage, logInViaUI, openRoom, send, messageBodies, until, artifactsDir, server, browser, useServerAndBrowser } from '../lib/harness.js';

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

let mallory;
let alice;

useServerAndBrowser([], async () => {
  mallory = await server.register('mallory');
  alice = await server.register('alice');
  await server.roomWith(mallory, { name: 'lobby', kind: 'public', members: [alice] });
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
});

// Markup, and right-to-left text with digits at its end. (The server refuses bidi controls in
// room names now, so an override that is never closed can only come from an older database;
// the isolates around names in sentences are there for it as much as for this.)
const NAME = '<img src=x onerror="window.__pwned=1">\u05E9\u05DC\u05D5\u05DD 42';

/** Whether the last visible character of `selector`'s text is drawn rightmost on its line. */
function endsOnTheRight(page, selector) {
  return page.$eval(selector, (el) => {
    const boxes = [];
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (let i = 0; i < node.length; i += 1) {
        const range = document.createRange();
        range.setStart(node, i);
        range.setEnd(node, i + 1);
        const box = range.getBoundingClientRect();
        if (box.width > 0) boxes.push(box);
      }
    }
    const last = boxes.at(-1);
    return boxes.filter((b) => Math.abs(b.top - last.top) < 2).every((b) => b.right <= last.right + 0.5);
  });
}

pageTest('a hostile room name is text, and does not reorder the sentences around it', async () => {
  const room = await server.roomWith(mallory, { name: NAME, kind: 'public', members: [alice] });
  // nina lets people add her at once, so the toast names the room.
  const nina = await server.register('nina');
  await server.api('PUT', '/v1/me/settings', { token: nina.token, body: { add_policy: 'anyone' } });
  const page = await openPage(browser);
  await logInViaUI(page, server, 'alice');
  const link = page.locator(`.room-link[data-room="${room.id}"]`);
  assert.equal(await link.locator('bdi.room-name').textContent(), NAME);
  await link.click();
  await page.locator('#history-status[data-state="start"]').waitFor();
  assert.equal(await page.locator('#room-title').textContent(), NAME);
  const inSentence = (before, after) => `${before}\u2068${NAME}\u2069${after}`;
  assert.equal(await page.locator('#composer-input').getAttribute('placeholder'), inSentence('Message #', ''));
  assert.equal(await page.locator('#history-status').textContent(), inSentence('This is the beginning of ', '.'));
  assert.ok(await endsOnTheRight(page, '#history-status'), 'status line ends on the right');

  // Dialog titles and toasts.
  await page.getByRole('button', { name: 'Invite' }).click();
  assert.equal(await page.locator('dialog h2').textContent(), inSentence('Invite someone to ', ''));
  await page.getByRole('dialog').getByLabel('Username').fill('nina');
  await page.getByRole('dialog').getByRole('button', { name: 'Invite' }).click();
  await page.locator('#toast', { hasText: 'nina was added' }).waitFor();
  assert.equal(await page.locator('#toast').textContent(), inSentence('nina was added to ', '.'));
  assert.ok(await endsOnTheRight(page, '#toast'), 'invite toast ends on the right');
  await page.getByRole('button', { name: 'Leave' }).click();
  assert.equal(await page.locator('dialog h2').textContent(), inSentence('Leave ', '?'));
  assert.ok(await endsOnTheRight(page, 'dialog h2'), 'leave dialog title ends on the right');
  await page.keyboard.press('Escape');
  await page.locator('dialog').waitFor({ state: 'detached' });
  await server.api('DELETE', `/v1/rooms/${room.id}/members/${alice.user.id}`, { token: mallory.token });
  await page.locator('#toast', { hasText: 'You were removed' }).waitFor();
  assert.equal(await page.locator('#toast').textContent(), inSentence('You were removed from ', '.'));
  assert.ok(await endsOnTheRight(page, '#toast'), 'removal toast ends on the right');

  // An invitation to a room with that name: the toast and the Invites list show it as text.
  await server.api('POST', '/v1/rooms', { token: mallory.token, body: { name: NAME, kind: 'private', members: [alice.user.id] } });
  const invite = page.locator('#invite-list > li');
  await invite.waitFor();
  assert.equal(await invite.locator('bdi.room-name').textContent(), NAME);
  await page.locator('#toast', { hasText: 'invited you to' }).waitFor();
  assert.equal(await page.locator('#toast').textContent(), inSentence('mallory invited you to ', '.'));
  assert.ok(await endsOnTheRight(page, '#toast'), 'invitation toast ends on the right');
  await invite.getByRole('button', { name: 'Decline' }).click();
  await page.locator('#invites-section').waitFor({ state: 'hidden' });

  // Nothing was built from the name: the only images are the page's own logos.
  const report = await page.evaluate(() => ({
    images: [...document.querySelectorAll('img')].map((i) => i.getAttribute('src')),
    pwned: window.__pwned === 1,
  }));
  assert.deepEqual([...new Set(report.images)], ['/favicon.svg']);
  assert.equal(report.pwned, false);
});
