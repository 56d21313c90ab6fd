// The server is killed (SIGKILL) and restarted on the same port and data directory while a
// page is open: the page shows that it is reconnecting, resumes with `since`, and ends with
// every message exactly once and in order: those posted by another user while it was away,
// and its own message typed while disconnected (sent optimistically, resent, acked once).

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { pageTest, Server, freePort, openPage, logInViaUI, openRoom, send, messageBodies, until, waitOnline, artifactsDir, server, browser, useServerAndBrowser } from '../lib/harness.js';

// While the server is down the browser itself logs each refused connection attempt as a
// console error; nothing a page can do prevents that. Only those are allowed here.
const REFUSED = [/ERR_CONNECTION_REFUSED/, /WebSocket connection to .* failed/];

// A small replay limit, so that the gap test below can go past it.
useServerAndBrowser(['--replay-limit', '20']);

async function history(token, roomId) {
  const { messages } = await server.api('GET', `/v1/rooms/${roomId}/messages?limit=200`, { token });
  return messages.map((m) => m.body);
}

pageTest('resumes after a SIGKILL and restart with nothing missing or doubled', async () => {
  const alice = await server.register('alice');
  const bob = await server.register('bob');
  const room = await server.roomWith(bob, { name: 'ops', kind: 'private', members: [alice] });
  let n = 0;
  const bobSays = (body) =>
    server.api('POST', `/v1/rooms/${room.id}/messages`, { token: bob.token, body: { client_msg_id: `b${(n += 1)}`, body } });

  await bobSays('before 1');
  await bobSays('before 2');
  const page = await openPage(browser, { allow: REFUSED });
  // Record each hello, to check that reconnects resume from the last seq seen.
  const hellos = [];
  page.on('websocket', (ws) =>
    ws.on('framesent', (f) => {
      const frame = JSON.parse(f.payload);
      if (frame.op === 'hello') hellos.push(frame);
    }),
  );
  await logInViaUI(page, server, 'alice');
  await openRoom(page, 'ops');
  await until(async () => (await messageBodies(page)).length === 2, { what: 'first messages' });
  await send(page, 'alice online');
  // Stored before bob's next one, so the order below is the one expected.
  await until(async () => (await page.locator('#pending > li').count()) === 0, { what: 'first send acked' });
  await bobSays('live 1');
  await until(async () => (await messageBodies(page)).join('|') === 'before 1|before 2|alice online|live 1', { what: 'live messages' });

  const seen = (await server.api('GET', `/v1/rooms/${room.id}`, { token: bob.token })).last_seq;

  // Down: the banner says so, and a message typed now waits as "Sending…".
  await server.kill('SIGKILL');
  await page.locator('#conn-banner', { hasText: 'Reconnecting' }).waitFor();
  await send(page, 'typed while down');
  await page.locator('#pending > li', { hasText: 'typed while down' }).waitFor();
  await page.screenshot({ path: join(artifactsDir(), 'reconnecting.png') });
  assert.match(await page.locator('#pending > li').textContent(), /Sending/);

  // Back, with messages from bob that the page has to catch up on.
  await server.start();
  await bobSays('missed 1');
  await bobSays('missed 2');
  await waitOnline(page, 30000);
  await page.locator('#conn-banner').waitFor({ state: 'hidden' });
  assert.ok(hellos.length >= 2, 'reconnected');
  assert.equal(hellos.at(-1).since[room.id], seen, 'resumed from the last seq seen');
  await bobSays('after 1');

  await until(async () => (await page.locator('#pending > li').count()) === 0, { what: 'pending send acked' });
  await until(async () => (await messageBodies(page)).includes('after 1'), { what: 'live after resume' });
  const truth = await history(bob.token, room.id);
  assert.deepEqual(await messageBodies(page), truth);
  assert.equal(truth.filter((b) => b === 'typed while down').length, 1);
  for (const b of ['missed 1', 'missed 2', 'after 1', 'typed while down']) assert.ok(truth.includes(b), b);

  // Again, killing the server right after a send: whether or not it was committed before the
  // kill, the resend after restart (same client_msg_id) leaves exactly one copy.
  await send(page, 'sent as it died');
  await server.kill('SIGKILL');
  await page.locator('#conn-banner', { hasText: 'Reconnecting' }).waitFor();
  await server.start();
  await bobSays('missed 3');
  await waitOnline(page, 30000);
  await until(async () => (await page.locator('#pending > li').count()) === 0, { what: 'second pending acked' });
  await until(async () => (await messageBodies(page)).includes('missed 3'), { what: 'missed 3' });
  const truth2 = await history(bob.token, room.id);
  assert.equal(truth2.filter((b) => b === 'sent as it died').length, 1);
  assert.deepEqual(await messageBodies(page), truth2);
  // Shown once each, with distinct seqs in increasing order.
  const seqs = await page.$$eval('#messages > li', (els) => els.map((e) => Number(e.dataset.seq)));
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
  assert.equal(new Set(seqs).size, seqs.length);
});

pageTest('a resume past the replay limit pages the gap over REST', async () => {
  const carol = await server.register('carol');
  const dan = await server.register('dan');
  const room = await server.roomWith(dan, { name: 'busy', kind: 'private', members: [carol] });
  const post = (via, i) =>
    via.api('POST', `/v1/rooms/${room.id}/messages`, { token: dan.token, body: { client_msg_id: `g${i}`, body: `busy ${i}` } });
  for (let i = 1; i <= 5; i += 1) await post(server, i);

  const page = await openPage(browser, { allow: REFUSED });
  const gaps = [];
  page.on('websocket', (ws) =>
    ws.on('framereceived', (f) => {
      const frame = JSON.parse(f.payload);
      if (frame.op === 'gap') gaps.push(frame);
    }),
  );
  await logInViaUI(page, server, 'carol');
  await openRoom(page, 'busy');
  await until(async () => (await messageBodies(page)).length === 5, { what: 'first messages' });

  // While the page is cut off, 150 messages land (through a second server on another port
  // but the same data directory, so the page cannot see them live).
  await server.kill('SIGKILL');
  await page.locator('#conn-banner', { hasText: 'Reconnecting' }).waitFor();
  const side = new Server(await freePort(), server.dataDir, server.args);
  try {
    await side.start();
    for (let i = 6; i <= 155; i += 1) await post(side, i);
  } finally {
    // Not stop(): the data directory is the main server's.
    await side.kill('SIGTERM');
  }
  await server.start();
  await waitOnline(page, 30000);

  // The page got a gap, reloaded the newest page, and can scroll back through all of it.
  await until(async () => (await messageBodies(page)).at(-1) === 'busy 155', { what: 'newest after the gap' });
  assert.equal(gaps.length, 1, 'the server sent a gap');
  for (let i = 0; i < 20; i += 1) {
    if ((await page.$eval('#history-status', (el) => el.dataset.state)) === 'start') break;
    const shown = (await messageBodies(page)).length;
    await page.$eval('#timeline', (el) => (el.scrollTop = 0));
    await until(
      () => page.evaluate((n) => document.querySelectorAll('#messages > li').length > n || document.querySelector('#history-status').dataset.state === 'start', shown),
      { what: 'an older page' },
    );
  }
  const expected = Array.from({ length: 155 }, (_, i) => `busy ${i + 1}`);
  assert.deepEqual(await messageBodies(page), expected);
});
