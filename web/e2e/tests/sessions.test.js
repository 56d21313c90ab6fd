// Sessions end: "Log out" ends this one on the server, "Log out everywhere" ends every one of
// the account's (another browser's socket is closed with 4003 and it shows the sign-in screen),
// a REST 401 in the middle of a session signs out with a notice, and an account with too many
// connections open (close 4012) is told so instead of being reconnected in a loop.

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { pageTest, openPage, logInViaUI, openRoom, until, waitOnline, routeSocket, allowStatus, PASSWORD, server, browser, useServerAndBrowser } from '../lib/harness.js';

// Two connections per account at most, so that a third tab is refused with 4012.
useServerAndBrowser(['--max-sessions-per-user', '2']);

const tokenOf = (page) => page.evaluate(() => localStorage.getItem('switchboard.token'));

/** The status of GET /v1/users/me with `token`. */
async function meStatus(token) {
  return (await fetch(`${server.url}/v1/users/me`, { headers: { Authorization: `Bearer ${token}` } })).status;
}

pageTest('"Log out" ends the session on the server and shows the sign-in screen', async () => {
  await server.register('lou');
  const page = await openPage(browser);
  await logInViaUI(page, server, 'lou');
  const token = await tokenOf(page);
  assert.equal(await meStatus(token), 200);

  // From the keyboard: focus the button, press Enter.
  await page.getByRole('button', { name: 'Log out', exact: true }).focus();
  await page.keyboard.press('Enter');
  await page.locator('#auth').waitFor({ state: 'visible' });
  assert.equal(await tokenOf(page), null);
  assert.equal(await page.evaluate(() => localStorage.getItem('switchboard.user')), null);
  // Asked for, so no "session ended" notice.
  assert.equal(await page.locator('#auth-notice').isVisible(), false);
  assert.equal(await page.locator('#auth-error').isVisible(), false);
  // The token is refused from now on.
  assert.equal(await meStatus(token), 401);
});

pageTest('"Log out everywhere" signs out another browser too: its socket closes with 4003', async () => {
  await server.register('eve');
  const here = await openPage(browser);
  const there = await openPage(browser);
  const ws = await routeSocket(there);
  await logInViaUI(here, server, 'eve');
  await logInViaUI(there, server, 'eve');
  const tokens = [await tokenOf(here), await tokenOf(there)];
  assert.notEqual(tokens[0], tokens[1], 'two sessions');

  await here.getByRole('button', { name: 'Log out everywhere' }).click();
  await here.locator('#auth').waitFor({ state: 'visible' });
  await here.locator('#auth-notice', { hasText: 'You are logged out on all your devices.' }).waitFor();
  assert.equal(await tokenOf(here), null);

  // The other browser did nothing: the server closed its socket, and it signed out.
  await until(() => ws.closes.includes(4003), { what: 'the other socket closed with 4003' });
  await there.locator('#auth').waitFor({ state: 'visible' });
  await there.locator('#auth-notice', { hasText: 'Your session ended. Sign in again.' }).waitFor();
  assert.equal(await tokenOf(there), null);
  // ...and it does not try to reconnect.
  const made = ws.connections;
  await sleep(1500);
  assert.equal(ws.connections, made, 'no reconnect after 4003');
  for (const t of tokens) assert.equal(await meStatus(t), 401);

  // Signing in again works, and the notice goes.
  await there.getByLabel('Username').fill('eve');
  await there.getByLabel('Password').fill(PASSWORD);
  await there.getByRole('button', { name: 'Log in' }).click();
  await there.locator('#chat').waitFor({ state: 'visible' });
  await waitOnline(there);
});

pageTest('a 401 from REST in the middle of a session signs out with a notice', async () => {
  const ray = await server.register('ray');
  const room = await server.api('POST', '/v1/rooms', { token: ray.token, body: { name: 'after-hours', kind: 'public', members: [] } });
  // The browser logs the refused requests of opening the room (its members, its messages, and,
  // for its owner, its open reports).
  const page = await openPage(browser, { allow: [allowStatus(401, new RegExp(`/v1/rooms/${room.id}/(members|messages\\?limit=50|reports\\?status=open)`))] });
  const ws = await routeSocket(page);
  await logInViaUI(page, server, 'ray');
  // The socket is down (so no 4003 can say it first) when the session is ended elsewhere.
  ws.mode = 'refuse';
  await ws.close();
  await page.locator('#conn-banner', { hasText: 'Reconnecting' }).waitFor();
  await server.api('DELETE', '/v1/sessions/current', { token: await tokenOf(page) });
  await page.locator('.room-link', { hasText: 'after-hours' }).click();
  await page.locator('#auth').waitFor({ state: 'visible' });
  await page.locator('#auth-notice', { hasText: 'Your session ended. Sign in again.' }).waitFor();
  assert.equal(await tokenOf(page), null);
});

pageTest('a token that expires while connected (4003 "token expired") signs out saying so', async () => {
  await server.register('tia');
  const page = await openPage(browser);
  const ws = await routeSocket(page);
  await logInViaUI(page, server, 'tia');
  // As the server closes a connection whose token runs out (played by the test: a real one
  // would take the token's lifetime).
  await ws.close(4003, 'token expired');
  await page.locator('#auth').waitFor({ state: 'visible' });
  await page.locator('#auth-notice', { hasText: 'Your session expired. Sign in again.' }).waitFor();
  assert.equal(await tokenOf(page), null);
});

pageTest('a connection refused for too many sessions (4012) says so and is not retried in a loop', async () => {
  await server.register('max');
  const first = await openPage(browser);
  const second = await openPage(browser);
  await logInViaUI(first, server, 'max');
  await logInViaUI(second, server, 'max');
  const third = await openPage(browser);
  const ws = await routeSocket(third);
  await third.goto(server.url + '/');
  await third.getByLabel('Username').fill('max');
  await third.getByLabel('Password').fill(PASSWORD);
  await third.getByRole('button', { name: 'Log in' }).click();
  await third.locator('#conn-banner', { hasText: 'too many open connections' }).waitFor();
  assert.deepEqual(ws.closes, [4012]);
  // A long wait before the next try, not a loop.
  await sleep(3000);
  assert.equal(ws.connections, 1, 'no retry within 3 s');

  // One tab closes; "Retry now" gets in without the long wait (pressed again until the server
  // has noticed the closed connection).
  await first.close();
  const retry = third.getByRole('button', { name: 'Retry now' });
  await until(
    async () => {
      if (await third.evaluate(() => document.documentElement.dataset.connection === 'online')) return true;
      if (await retry.isVisible()) await retry.click({ timeout: 1000 }).catch(() => {});
      return false;
    },
    { timeout: 15000, interval: 700, what: 'online after a slot freed' },
  );
  await third.locator('#conn-banner').waitFor({ state: 'hidden' });
  assert.equal(await third.locator('#me-name').textContent(), 'max');
});

pageTest('the account area shows who is signed in and the account actions', async () => {
  const sue = await server.register('sue');
  await server.api('POST', '/v1/rooms', { token: sue.token, body: { name: 'corner', kind: 'public', members: [] } });
  const page = await openPage(browser);
  await logInViaUI(page, server, 'sue');
  await openRoom(page, 'corner');
  // The account area shows who is signed in and the three account actions.
  assert.equal(await page.locator('#me-name').textContent(), 'sue');
  for (const name of ['Settings', 'Log out', 'Log out everywhere']) {
    assert.equal(await page.getByRole('button', { name, exact: true }).isVisible(), true, name);
  }
});
