// What the page shows stays right when REST answers and socket frames race or go missing: a
// room joined while the socket is down, a live message the newest page already had, a send
// whose ack was lost, an unread message deleted before it was loaded, and a server error at
// page load. The test sits between the page and the server (routeSocket, page.route) to make
// each race happen every time.

import assert from 'node:assert/strict';
import { pageTest, openPage, logInViaUI, openRoom, send, messageBodies, until, waitOnline, routeSocket, server, browser, useServerAndBrowser } from '../lib/harness.js';

useServerAndBrowser();

let n = 0;
function post(who, room, body) {
  return server.api('POST', `/v1/rooms/${room.id}/messages`, { token: who.token, body: { client_msg_id: `s${(n += 1)}`, body } });
}

async function bodiesOver(who, room) {
  const { messages } = await server.api('GET', `/v1/rooms/${room.id}/messages?limit=200`, { token: who.token });
  return messages.map((m) => m.body);
}

pageTest('a room joined while the socket is down gets what was posted before it came back', async () => {
  const olga = await server.register('olga');
  await server.register('pat');
  const room = await server.api('POST', '/v1/rooms', { token: olga.token, body: { name: 'later', kind: 'public', members: [] } });
  await post(olga, room, 'm1');

  const page = await openPage(browser);
  const ws = await routeSocket(page);
  await logInViaUI(page, server, 'pat');

  // The socket goes down and stays down; REST still works.
  ws.mode = 'refuse';
  await ws.close();
  await page.locator('#conn-banner', { hasText: 'Reconnecting' }).waitFor();
  await page.locator('#browse-button').click();
  await page.getByRole('button', { name: 'Join later' }).click();
  await page.locator('#room-title', { hasText: 'later' }).waitFor();
  await until(async () => (await messageBodies(page)).join('|') === 'm1', { what: 'the newest page' });

  // Posted after that page, before the socket is back: the resume must bring it.
  await post(olga, room, 'm2');
  ws.mode = 'pass';
  // The next attempt of its backoff (10 s at most) gets through.
  await waitOnline(page, 20000);
  await until(async () => (await messageBodies(page)).join('|') === 'm1|m2', { what: 'm2 after the socket came back' });
  await post(olga, room, 'm3');
  await until(async () => (await messageBodies(page)).join('|') === 'm1|m2|m3', { what: 'live again' });
});

pageTest('a live message the open room already showed leaves no unread badge', async () => {
  const quinn = await server.register('quinn');
  const rita = await server.register('rita');
  const room = await server.roomWith(quinn, { name: 'quiet', kind: 'private', members: [rita] });

  const page = await openPage(browser);
  const ws = await routeSocket(page);
  await logInViaUI(page, server, 'rita');
  await page.locator('.room-link', { hasText: 'quiet' }).waitFor();

  // The live message is held back until the room's newest page, which has it, is on screen.
  ws.filter = (f) => (f.op === 'message' && f.room === room.id ? 'hold' : null);
  await post(quinn, room, 'hello rita');
  await until(() => ws.held.length === 1, { what: 'the live message held' });
  await openRoom(page, 'quiet');
  await until(async () => (await messageBodies(page)).join('|') === 'hello rita', { what: 'the page shown' });
  ws.filter = () => null;
  ws.release();

  const badge = page.locator('.room-link', { hasText: 'quiet' }).locator('.badge');
  await until(
    async () => {
      const { unread } = await server.api('GET', `/v1/rooms/${room.id}`, { token: rita.token });
      return unread === 0 && !(await badge.isVisible());
    },
    { what: 'read on the server, and no badge' },
  );
  assert.deepEqual(await messageBodies(page), ['hello rita']);
});

pageTest('a send whose ack was lost is shown once when a page of history has it', async () => {
  const sam = await server.register('sam');
  const room = await server.api('POST', '/v1/rooms', { token: sam.token, body: { name: 'notes', kind: 'private', members: [] } });

  const page = await openPage(browser);
  const ws = await routeSocket(page);
  await logInViaUI(page, server, 'sam');
  // The ack and the live message never arrive; the room's first page is fetched only once the
  // message is stored, so that page is what confirms it.
  ws.filter = (f) => (f.op === 'ack' || (f.op === 'message' && f.room === room.id) ? 'drop' : null);
  let releasePage;
  const pageHeld = new Promise((r) => (releasePage = r));
  await page.route(
    (url) => url.pathname === `/v1/rooms/${room.id}/messages`,
    async (route) => {
      await pageHeld;
      await route.fulfill({ response: await route.fetch() });
    },
  );
  await page.locator('.room-link', { hasText: 'notes' }).click();
  await page.locator('#room-title', { hasText: 'notes' }).waitFor();
  await send(page, 'only once');
  await page.locator('#pending > li', { hasText: 'only once' }).waitFor();
  await until(async () => (await bodiesOver(sam, room)).includes('only once'), { what: 'stored' });
  releasePage();

  await until(async () => (await messageBodies(page)).join('|') === 'only once', { what: 'the page shown' });
  await until(async () => (await page.locator('#pending > li').count()) === 0, { what: 'no copy left "Sending…"' });
});

pageTest('deleting an unread message that was never loaded lowers the unread count', async () => {
  const uma = await server.register('uma');
  const tess = await server.register('tess');
  const room = await server.roomWith(uma, { name: 'digest', kind: 'public', members: [tess] });
  // Posted before the page opens, and the room is never opened: the page has only the count.
  const sent = [];
  for (const body of ['d1', 'd2', 'd3']) sent.push(await post(uma, room, body));
  const page = await openPage(browser);
  await logInViaUI(page, server, 'tess');
  const badge = page.locator('.room-link', { hasText: 'digest' }).locator('.badge');
  await until(async () => (await badge.textContent()) === '3', { what: 'unread badge 3' });
  await server.api('DELETE', `/v1/rooms/${room.id}/messages/${sent[1].id}`, { token: uma.token });
  await until(async () => (await badge.textContent()) === '2', { what: 'unread badge 2 after the delete' });
});

pageTest('a server error at page load does not sign the user out', async () => {
  await server.register('vic');
  // The browser logs the 503s this test provokes; only those are allowed.
  const page = await openPage(browser, { allow: [/status of 503 .*\(http:\/\/[^/]+\/v1\/users\/me\)$/] });
  await logInViaUI(page, server, 'vic');
  const me = '**/v1/users/me';
  await page.route(me, (route) =>
    route.fulfill({ status: 503, contentType: 'application/json', body: JSON.stringify({ error: { code: 'unavailable', message: 'try later' } }) }),
  );

  // The account is known from the last visit: carry on with it.
  await page.reload();
  await page.locator('#me-name', { hasText: 'vic' }).waitFor();
  await waitOnline(page);
  assert.notEqual(await page.evaluate(() => localStorage.getItem('switchboard.token')), null);

  // Not known: say what happened and offer to try again, still signed in.
  await page.evaluate(() => localStorage.removeItem('switchboard.user'));
  await page.reload();
  await page.locator('#auth-error', { hasText: 'The server is busy' }).waitFor();
  assert.notEqual(await page.evaluate(() => localStorage.getItem('switchboard.token')), null);
  await page.unroute(me);
  await page.getByRole('button', { name: 'Try again' }).click();
  await page.locator('#me-name', { hasText: 'vic' }).waitFor();
  await waitOnline(page);
});
