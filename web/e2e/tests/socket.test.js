// The socket against servers that misbehave, with the test between page and server
// (routeSocket): one that closes right after `ready`, one that never answers, a long outbox
// sent at once into the server's rate limit, and frames over the server's size limit.

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { pageTest, openPage, logInViaUI, openRoom, messageBodies, until, waitOnline, routeSocket, submitAll, PASSWORD, server, browser, useServerAndBrowser } from '../lib/harness.js';

// The server's default per-user send limit (the harness lifts it for fixtures): the client's
// pacing must stay under it.
useServerAndBrowser(['--user-sends-per-sec', '20', '--user-sends-burst', '60']);

pageTest('a server that closes right after ready is retried with growing waits', async () => {
  await server.register('abe');
  const page = await openPage(browser);
  const ws = await routeSocket(page);
  await logInViaUI(page, server, 'abe');

  // From now on every connection is closed (1011, as after a store error during the replay)
  // just after its `ready`.
  ws.filter = (f) => {
    if (f.op === 'ready') setTimeout(() => ws.close(1011), 0);
    return null;
  };
  const before = ws.connections;
  await ws.close(1011);
  // Backoff from 300 ms doubling: at most 4 connections in 4 s (it starts over only after a
  // connection stayed up); starting over at every `ready` would make a dozen or more.
  await sleep(4000);
  const made = ws.connections - before;
  assert.ok(made >= 2 && made <= 5, `${made} connections in 4 s`);
});

pageTest('a connection that never says ready is given up: at once on "Retry now", or after a timeout', async () => {
  await server.register('bea');
  const page = await openPage(browser);
  const ws = await routeSocket(page);
  ws.mode = 'hang';
  await page.goto(server.url + '/');
  await page.getByLabel('Username').fill('bea');
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#conn-banner', { hasText: 'Connecting' }).waitFor();
  assert.equal(ws.connections, 1);

  ws.mode = 'pass';
  await page.getByRole('button', { name: 'Retry now' }).click();
  await waitOnline(page, 3000);

  // Stuck again, and left alone this time.
  ws.mode = 'hang';
  const stuckAt = ws.connections + 1;
  await ws.close(1011);
  await until(() => ws.connections === stuckAt, { what: 'the next connection' });
  ws.mode = 'pass';
  const t0 = Date.now();
  await waitOnline(page, 20000);
  const waited = Date.now() - t0;
  assert.ok(waited > 5000 && waited < 15000, `given up after ${waited} ms`);
});

pageTest('150 messages written offline go out at reconnect without tripping the rate limit', async () => {
  const cal = await server.register('cal');
  const room = await server.api('POST', '/v1/rooms', { token: cal.token, body: { name: 'burst', kind: 'private', members: [] } });
  const page = await openPage(browser);
  const ws = await routeSocket(page);
  await logInViaUI(page, server, 'cal');
  await openRoom(page, 'burst');

  ws.mode = 'refuse';
  await ws.close();
  await page.locator('#conn-banner', { hasText: 'Reconnecting' }).waitFor();
  const bodies = Array.from({ length: 150 }, (_, i) => `burst ${i + 1}`);
  await submitAll(page, bodies);
  assert.equal(await page.locator('#pending > li').count(), 150);

  const closesBefore = ws.closes.length;
  const frames = ws.received.length;
  ws.mode = 'pass';
  // The next attempt of its backoff (10 s at most) gets through.
  await waitOnline(page, 20000);
  await until(async () => (await page.locator('#pending > li').count()) === 0, { timeout: 30000, what: 'all acked' });

  // Nothing refused, no 4008, each message once and in order.
  assert.deepEqual(ws.received.slice(frames).filter((f) => f.op === 'error'), []);
  assert.deepEqual(ws.closes.slice(closesBefore), []);
  const { messages } = await server.api('GET', `/v1/rooms/${room.id}/messages?limit=200`, { token: cal.token });
  assert.deepEqual(messages.map((m) => m.body), bodies);
  assert.deepEqual(await messageBodies(page), bodies);
});

// The server's size limit is played by the test (routeSocket `maxFrame`, which says why).
pageTest('a send over the server frame limit fails alone; the sends after it go', async () => {
  const dee = await server.register('dee');
  await server.api('POST', '/v1/rooms', { token: dee.token, body: { name: 'limits', kind: 'private', members: [] } });
  const page = await openPage(browser);
  const ws = await routeSocket(page);
  ws.maxFrame = 8192;
  await logInViaUI(page, server, 'dee');
  await openRoom(page, 'limits');
  // 3,000 characters: under the body limit, but 9,000 bytes, over this frame limit.
  const big = '€'.repeat(3000);
  await submitAll(page, [big, 'small one', 'and another']);
  await page.locator('#pending > li.failed', { hasText: 'Too large to send' }).waitFor();
  await until(async () => (await messageBodies(page)).join('|') === 'small one|and another', { what: 'the small ones' });
  assert.equal(await page.locator('#pending > li').count(), 1);
  assert.deepEqual(ws.closes, [1009]);
});

pageTest('a hello over the server frame limit is cut down instead of retried forever', async () => {
  const eve = await server.register('eve');
  // 150 rooms: a hello with all their positions is about 6 KB. Creating a room draws on the
  // same per-user write budget as sending (burst 60, then 20/s), so past the burst, pace.
  for (let i = 0; i < 150; i += 1) {
    if (i >= 50) await sleep(55);
    await server.api('POST', '/v1/rooms', { token: eve.token, body: { name: `room-${String(i).padStart(3, '0')}`, kind: 'private', members: [] } });
  }
  const page = await openPage(browser);
  const ws = await routeSocket(page);
  ws.maxFrame = 4096;
  await logInViaUI(page, server, 'eve');
  await openRoom(page, 'room-000');

  await ws.close(1011);
  await until(() => ws.closes.includes(1009), { what: 'the full hello refused' });
  await waitOnline(page);
  // The open room kept its place: live messages still arrive.
  const room = (await server.api('GET', '/v1/rooms', { token: eve.token })).rooms.find((r) => r.name === 'room-000');
  await server.api('POST', `/v1/rooms/${room.id}/messages`, { token: eve.token, body: { client_msg_id: 'h1', body: 'still here' } });
  await until(async () => (await messageBodies(page)).includes('still here'), { what: 'a live message' });
  assert.equal(ws.sent.filter((f) => f.op === 'hello').at(-1).since[room.id] !== undefined, true, 'the open room resumed');
});
