// Presence, in two browser contexts: ben watches ann. Her dm's dot in his list turns online when
// she signs in (and his dm header says "Online"); her tab hidden makes her "Away" (the page
// sends a `status` frame), shown again "Online"; her custom status shows as text; she closes
// her tab and, after the server's grace period (short here), he sees "last seen …". Group rooms
// say "N members · M online", counted from presence in a small room and from the server's
// `online` count in a large one (over --presence-room-limit). The member list shows everyone
// with their status (the large room's over GET /v1/presence). In the dm, "Seen" shows under
// her newest message once he has read it, and is still there after she reloads.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { artifactsDir, pageTest, openPage, logInViaUI, openRoom, send, messageBodies, until, routeSocket, allowStatus, server, browser, useServerAndBrowser } from '../lib/harness.js';

let ann;
let ben;
let cat;

useServerAndBrowser(
  // A closed tab counts for 300 ms, changes go out at once, and rooms of more than 2 members get
  // an online count (every 100 ms) instead of presence frames.
  ['--presence-grace-ms', '300', '--presence-interval-ms', '50', '--presence-room-limit', '2', '--presence-count-ms', '100'],
  async () => {
    ann = await server.register('ann');
    ben = await server.register('ben');
    cat = await server.register('cat');
    // A dm shares presence once both took part: she wrote, he read it.
    const dm = await server.api('POST', '/v1/rooms', { token: ann.token, body: { name: '', kind: 'dm', members: [ben.user.id] } });
    const hi = await server.api('POST', `/v1/rooms/${dm.id}/messages`, { token: ann.token, body: { client_msg_id: 'hi', body: 'hi ben' } });
    await server.api('POST', `/v1/rooms/${dm.id}/read`, { token: ben.token, body: { seq: hi.seq } });
    await server.roomWith(ann, { name: 'pair', kind: 'private', members: [ben] });
    await server.roomWith(ann, { name: 'lobby', kind: 'public', members: [ben, cat] });
  },
);

/** Makes the page's tab hidden (or visible again) as the browser would, with its event. */
function setHidden(page, hidden) {
  return page.evaluate((h) => {
    if (h) {
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
      Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
    } else {
      delete document.visibilityState;
      delete document.hidden;
    }
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
}

/**
 * Sets `user`'s custom status over a connection of its own (the app has no form for it yet).
 * Resolves to {answer, close}: `answer` is the server's answer to a ping sent after it ('pong',
 * or 'error' if it was refused); `close()` closes that connection. (Keep it open until the change
 * has been seen: the server applies a status after answering the ping, and a connection closed
 * at once may take the change with it.)
 */
async function customStatus(user, text) {
  // A plain page of the server's (the browser asks it for a favicon.ico there: none).
  const helper = await openPage(browser, { allow: [allowStatus(404, '/favicon.ico')] });
  await helper.goto(server.url + '/healthz');
  const answer = await helper.evaluate(
    async ({ token, text }) => {
      const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/v1/ws');
      window.statusSocket = ws;
      const next = (ops) => new Promise((res) => (ws.onmessage = (e) => ops.includes(JSON.parse(e.data).op) && res(JSON.parse(e.data))));
      await new Promise((res, rej) => ((ws.onopen = res), (ws.onerror = rej)));
      ws.send(JSON.stringify({ op: 'hello', token }));
      await next(['ready']);
      ws.send(JSON.stringify({ op: 'status', status: 'online', text }));
      ws.send(JSON.stringify({ op: 'ping' }));
      return (await next(['pong', 'error'])).op;
    },
    { token: user.token, text },
  );
  const close = () =>
    helper.evaluate(async () => {
      const ws = window.statusSocket;
      const closed = new Promise((res) => (ws.onclose = res));
      ws.close();
      await closed;
    });
  return { answer, close };
}

pageTest('presence dots, header, member list, away, last seen, online counts and Seen', async () => {
  const b = await openPage(browser);
  await logInViaUI(b, server, 'ben');
  const dmLink = b.locator('#dm-list .room-link', { hasText: 'ann' });
  const dot = dmLink.locator('.presence');

  // ann has never been online: offline, with no time known.
  await b.locator('#dm-list .room-link .presence[data-status="offline"]').waitFor({ state: 'attached' });
  assert.equal(await dot.getAttribute('title'), 'offline');

  // ann signs in: her dot turns online, and the link says so.
  const a = await openPage(browser);
  const aWs = await routeSocket(a);
  await logInViaUI(a, server, 'ann');
  await b.locator('#dm-list .room-link .presence[data-status="online"]').waitFor({ state: 'attached' });
  assert.equal(await dot.getAttribute('title'), 'online');
  assert.equal(await dmLink.getAttribute('aria-label'), 'ann, online');

  // She writes in the dm before he has opened it: not seen yet.
  await openRoom(a, 'ben');
  await send(a, 'are you there?');
  const hers = a.locator('#messages > li.msg', { hasText: 'are you there?' });
  await hers.waitFor();
  await until(async () => (await a.locator('#pending > li').count()) === 0, { what: 'send confirmed' });
  assert.equal(await a.locator('.msg-receipt').count(), 0);

  // He opens it: his header says she is online, and reading it shows her "Seen".
  await openRoom(b, 'ann');
  await until(async () => (await messageBodies(b)).includes('are you there?'), { what: 'her message at his end' });
  await b.locator('#room-meta', { hasText: 'Online' }).waitFor();
  assert.equal(await b.locator('#room-meta').textContent(), 'Online');
  await hers.locator('.msg-receipt', { hasText: 'Seen' }).waitFor();
  assert.equal(await a.locator('.msg-receipt').count(), 1);
  assert.equal(await hers.locator('.msg-receipt').getAttribute('title'), 'Seen by ben');

  // The dm's member list: both of them, online.
  await b.getByRole('button', { name: 'Members' }).click();
  const dialog = b.getByRole('dialog');
  await dialog.locator('.member-item').nth(1).waitFor();
  const members = () =>
    dialog.locator('.member-item').evaluateAll((els) =>
      els.map((el) => [el.querySelector('.member-name').textContent, el.dataset.status, el.querySelector('.member-status').textContent]),
    );
  assert.deepEqual(await members(), [
    ['ann', 'online', 'Online'],
    ['ben', 'online', 'Online'],
  ]);
  assert.equal(await dialog.locator('.members-summary').textContent(), '2 members · 2 online');

  // Her tab is hidden: her page says away, and he sees it (in the open list too).
  await setHidden(a, true);
  await until(() => aWs.sent.some((f) => f.op === 'status' && f.status === 'away'), { what: 'status away sent' });
  await dialog.locator('.member-item[data-user="' + ann.user.id + '"][data-status="away"]').waitFor();
  assert.deepEqual(await members(), [
    ['ben', 'online', 'Online'],
    ['ann', 'away', 'Away'],
  ]);
  await b.keyboard.press('Escape');
  await dialog.waitFor({ state: 'detached' });
  await b.locator('#room-meta', { hasText: 'Away' }).waitFor();
  assert.equal(await dot.getAttribute('data-status'), 'away');
  assert.equal(await dmLink.getAttribute('aria-label'), 'ann, away');
  await b.screenshot({ path: join(artifactsDir(), 'presence-away.png') });

  // Shown again: online.
  await setHidden(a, false);
  await until(() => aWs.sent.some((f) => f.op === 'status' && f.status === 'online'), { what: 'status online sent' });
  await b.locator('#room-meta', { hasText: 'Online' }).waitFor();

  // Her custom status is text: markup stays markup, isolated from the words around it.
  // (It outlives the connection that set it: still there when she is last seen, below.)
  const custom = '<img src=x onerror=alert(1)> in a meeting';
  const status = await customStatus(ann, custom);
  assert.equal(status.answer, 'pong');
  await b.locator('#room-meta .status-text').waitFor();
  await status.close();
  assert.equal(await b.locator('#room-meta .status-text').textContent(), custom);
  assert.equal(await b.locator('#room-meta').textContent(), `Online · ${custom}`);
  assert.equal(await b.locator('#room-meta img').count(), 0);
  assert.equal(await b.locator('#room-meta .status-text').evaluate((el) => el.tagName), 'BDI');

  // After a reload, her "Seen" is still there (his read marker comes with the member list).
  await a.reload();
  await a.locator('#room-title', { hasText: 'ben' }).waitFor();
  await hers.locator('.msg-receipt', { hasText: 'Seen' }).waitFor();
  await a.screenshot({ path: join(artifactsDir(), 'presence-seen.png') });
  // A message of hers he has not read takes it away; his reading it brings it back there.
  await b.locator('#room-meta', { hasText: 'Online' }).waitFor();
  await openRoom(b, 'pair');
  await send(a, 'still there?');
  const second = a.locator('#messages > li.msg', { hasText: 'still there?' });
  await second.waitFor();
  await until(async () => (await a.locator('.msg-receipt').count()) === 0, { what: 'Seen gone after a new message' });
  await openRoom(b, 'ann');
  await second.locator('.msg-receipt', { hasText: 'Seen' }).waitFor();
  assert.equal(await a.locator('.msg-receipt').count(), 1);

  // A small group room counts who is online from presence; a large one has the server's count.
  await openRoom(b, 'pair');
  await b.locator('#room-meta', { hasText: 'Private room · 2 members · 2 online' }).waitFor();
  await openRoom(b, 'lobby');
  await b.locator('#room-meta', { hasText: 'Public room · 3 members · 2 online' }).waitFor();
  // The large room's member list asks for presence over REST: cat was never online.
  await b.getByRole('button', { name: 'Members' }).click();
  await dialog.locator('.member-item[data-status="offline"]').waitFor();
  assert.deepEqual(await members(), [
    ['ann', 'online', `Online · ${custom}`],
    ['ben', 'online', 'Online'],
    ['cat', 'offline', 'Offline'],
  ]);
  assert.equal(await dialog.locator('.member-role').textContent(), 'Owner');
  await b.screenshot({ path: join(artifactsDir(), 'presence-members.png') });
  await b.keyboard.press('Escape');
  await dialog.waitFor({ state: 'detached' });

  // She closes her tab: after the grace period she is offline, last seen just now.
  await a.context().close();
  await b.locator('#room-meta', { hasText: 'Public room · 3 members · 1 online' }).waitFor();
  await b.locator('#dm-list .room-link .presence[data-status="offline"]').waitFor({ state: 'attached' });
  assert.equal(await dot.getAttribute('title'), 'last seen just now');
  await openRoom(b, 'pair');
  await b.locator('#room-meta', { hasText: 'Private room · 2 members · 1 online' }).waitFor();
  await openRoom(b, 'ann');
  await b.locator('#room-meta', { hasText: 'last seen' }).waitFor();
  assert.equal(await b.locator('#room-meta').textContent(), `last seen just now · ${custom}`);
});
