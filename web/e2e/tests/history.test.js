// A room with 500 messages: the newest page shows first, and scrolling to the top loads older
// pages (keeping the scroll position) until the beginning, all in seq order with nothing missing
// or repeated. And switching rooms: a slow older page of one room does not hold up scrolling
// back in the next, nor does one room's load error show in another.

import assert from 'node:assert/strict';
import { pageTest, openPage, logInViaUI, openRoom, messageBodies, until, server, browser, useServerAndBrowser } from '../lib/harness.js';

const COUNT = 500;

useServerAndBrowser();

pageTest('500 messages scroll back completely and in order', async () => {
  const alice = await server.register('alice');
  const room = await server.api('POST', '/v1/rooms', { token: alice.token, body: { name: 'archive', kind: 'public', members: [] } });

  // Post in parallel batches; the seq each message got decides the order the UI must show.
  const bySeq = [];
  for (let start = 1; start <= COUNT; start += 25) {
    const batch = [];
    for (let n = start; n < start + 25 && n <= COUNT; n += 1) {
      batch.push(
        server.api('POST', `/v1/rooms/${room.id}/messages`, {
          token: alice.token,
          body: { client_msg_id: `h${n}`, body: `message ${n}` },
        }),
      );
    }
    for (const m of await Promise.all(batch)) bySeq.push(m);
  }
  bySeq.sort((a, b) => a.seq - b.seq);
  const expected = bySeq.map((m) => m.body);
  assert.equal(new Set(expected).size, COUNT);

  const page = await openPage(browser);
  await logInViaUI(page, server, 'alice');
  await openRoom(page, 'archive');
  // The newest page is at the bottom, scrolled to the end.
  await until(async () => (await messageBodies(page)).length >= 50, { what: 'first page' });
  assert.deepEqual(await messageBodies(page), expected.slice(-(await messageBodies(page)).length));
  const atBottom = await page.$eval('#timeline', (el) => el.scrollHeight - el.scrollTop - el.clientHeight < 2);
  assert.ok(atBottom, 'opens at the newest message');

  // Scroll to the top repeatedly; each older page is prepended without moving the view. The
  // message that was first is the anchor: its bottom edge (its header goes when the page above
  // makes it a continuation of the same author's messages) must stay where it was.
  const offsetOf = (seq) =>
    page.evaluate((s) => {
      const li = document.querySelector(`#messages > li[data-seq="${s}"]`);
      return li.getBoundingClientRect().bottom - document.querySelector('#timeline').getBoundingClientRect().top;
    }, seq);
  let rounds = 0;
  for (;;) {
    const state = await page.$eval('#history-status', (el) => el.dataset.state);
    if (state === 'start') break;
    assert.ok((rounds += 1) < 40, 'too many pages');
    const before = await page.evaluate(() => {
      const sc = document.querySelector('#timeline');
      sc.scrollTop = 0;
      const first = document.querySelector('#messages > li');
      const offset = first.getBoundingClientRect().bottom - sc.getBoundingClientRect().top;
      return { count: document.querySelectorAll('#messages > li').length, firstSeq: first.dataset.seq, offset };
    });
    await until(
      async () => {
        const s = await page.$eval('#history-status', (el) => el.dataset.state);
        const n = await page.$$eval('#messages > li', (els) => els.length);
        return s === 'start' || n > before.count;
      },
      { what: 'an older page' },
    );
    const offset = await offsetOf(before.firstSeq);
    assert.ok(Math.abs(offset - before.offset) <= 2, `scroll position kept (message ${before.firstSeq} moved from ${before.offset}px to ${offset}px)`);
  }
  const shown = await messageBodies(page);
  assert.equal(shown.length, COUNT);
  assert.deepEqual(shown, expected);
  const seqs = await page.$$eval('#messages > li', (els) => els.map((e) => Number(e.dataset.seq)));
  assert.deepEqual(seqs, bySeq.map((m) => m.seq));
});

/** A public room of `owner` with `count` messages. */
async function roomWith(owner, name, count) {
  const room = await server.api('POST', '/v1/rooms', { token: owner.token, body: { name, kind: 'public', members: [] } });
  for (let start = 1; start <= count; start += 25) {
    const batch = [];
    for (let i = start; i < start + 25 && i <= count; i += 1) {
      batch.push(server.api('POST', `/v1/rooms/${room.id}/messages`, { token: owner.token, body: { client_msg_id: `${name}-${i}`, body: `${name} ${i}` } }));
    }
    await Promise.all(batch);
  }
  return room;
}

pageTest('a slow older page of one room does not hold up scrolling back in the next', async () => {
  const bo = await server.register('bo');
  const slow = await roomWith(bo, 'slow-room', 120);
  await roomWith(bo, 'next-room', 120);
  const page = await openPage(browser);
  await logInViaUI(page, server, 'bo');
  // slow-room's older pages hang until the end of the test.
  let release;
  const held = new Promise((r) => (release = r));
  let asked = false;
  await page.route(
    (url) => url.pathname === `/v1/rooms/${slow.id}/messages` && url.searchParams.has('before_seq'),
    async (route) => {
      asked = true;
      await held;
      await route.fulfill({ response: await route.fetch() }).catch(() => {});
    },
  );
  try {
    await openRoom(page, 'slow-room');
    await page.$eval('#timeline', (el) => (el.scrollTop = 0));
    await until(() => asked, { what: 'an older page of slow-room asked for' });

    await openRoom(page, 'next-room');
    const shown = (await messageBodies(page)).length;
    await page.$eval('#timeline', (el) => (el.scrollTop = 0));
    await until(async () => (await messageBodies(page)).length > shown, { what: 'an older page of next-room' });
  } finally {
    // The held request is of no interest any more: let it end without a page to go to.
    await page.unrouteAll({ behavior: 'ignoreErrors' });
    release();
  }
});

pageTest('a room that failed to load does not leave its error on the next one', async () => {
  const cy = await server.register('cy');
  const broken = await roomWith(cy, 'broken-room', 3);
  await roomWith(cy, 'fine-room', 3);
  // The browser logs the 503s this test provokes; only those are allowed.
  const failing = new RegExp(`status of 503 .*/v1/rooms/${broken.id}/messages`);
  const page = await openPage(browser, { allow: [failing] });
  await page.route(
    (url) => url.pathname === `/v1/rooms/${broken.id}/messages`,
    (route) => route.fulfill({ status: 503, contentType: 'application/json', body: '{"error":{"code":"unavailable","message":"down"}}' }),
  );
  await logInViaUI(page, server, 'cy');
  await openRoom(page, 'fine-room');
  await page.locator('#history-status[data-state="start"]').waitFor();
  await page.locator('.room-link', { hasText: 'broken-room' }).click();
  await page.locator('#history-status[data-state="error"]', { hasText: 'Could not load messages.' }).waitFor();
  // Back to the room that loaded: its own status, not the other room's error.
  await page.locator('.room-link', { hasText: 'fine-room' }).click();
  await page.locator('#room-title', { hasText: 'fine-room' }).waitFor();
  assert.equal(await page.locator('#history-status').getAttribute('data-state'), 'start');
});
