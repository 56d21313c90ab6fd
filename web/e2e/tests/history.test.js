// A room with 500 messages: the newest page shows first, and scrolling to the top loads older
// pages (keeping the scroll position) until the beginning, all in seq order with nothing missing
// or repeated.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { pageTest, Server, launchBrowser, openPage, logInViaUI, openRoom, messageBodies, until } from '../lib/harness.js';

const COUNT = 500;
let server;
let browser;

before(async () => {
  server = await Server.start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

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

  // Scroll to the top repeatedly; each older page is prepended without moving the view.
  let rounds = 0;
  for (;;) {
    const state = await page.$eval('#history-status', (el) => el.dataset.state);
    if (state === 'start') break;
    assert.ok((rounds += 1) < 40, 'too many pages');
    const before = await page.evaluate(() => {
      const sc = document.querySelector('#timeline');
      const first = document.querySelector('#messages > li');
      sc.scrollTop = 0;
      return { count: document.querySelectorAll('#messages > li').length, firstSeq: first && first.dataset.seq };
    });
    await until(
      async () => {
        const s = await page.$eval('#history-status', (el) => el.dataset.state);
        const n = await page.$$eval('#messages > li', (els) => els.length);
        return s === 'start' || n > before.count;
      },
      { what: 'an older page' },
    );
    // The message that was first is still where the user saw it: not at the top any more
    // (unless this was the last page and it fitted on screen).
    if (before.firstSeq) {
      const top = await page.evaluate((seq) => {
        const li = document.querySelector(`#messages > li[data-seq="${seq}"]`);
        const sc = document.querySelector('#timeline');
        return li.getBoundingClientRect().top - sc.getBoundingClientRect().top;
      }, before.firstSeq);
      assert.ok(top >= -5, `scroll position kept (first old message at ${top}px)`);
    }
  }
  const shown = await messageBodies(page);
  assert.equal(shown.length, COUNT);
  assert.deepEqual(shown, expected);
  const seqs = await page.$$eval('#messages > li', (els) => els.map((e) => Number(e.dataset.seq)));
  assert.deepEqual(seqs, bySeq.map((m) => m.seq));
});
