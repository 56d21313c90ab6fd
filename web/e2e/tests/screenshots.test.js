// Screenshots of the main view for people to look at: a room with a conversation at desktop
// size (light and dark) and at phone size (the room list and the open room), saved under
// target/web-artifacts/.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { statSync } from 'node:fs';
import { pageTest, openPage, logInViaUI, openRoom, artifactsDir, until, messageBodies, server, browser, useServerAndBrowser } from '../lib/harness.js';

let room;

useServerAndBrowser([], async () => {
  const alice = await server.register('alice');
  const bob = await server.register('bob');
  const carol = await server.register('carol');
  room = await server.roomWith(alice, { name: 'design-review', kind: 'public', members: [bob, carol] });
  await server.roomWith(bob, { name: 'random', kind: 'public', members: [alice] });
  await server.roomWith(carol, { name: 'launch-plans', kind: 'private', members: [alice] });
  await server.api('POST', '/v1/rooms', { token: bob.token, body: { name: '', kind: 'dm', members: [alice.user.id] } });
  // One invitation alice has not answered yet, so the screenshots show the Invites section.
  await server.api('POST', '/v1/rooms', { token: carol.token, body: { name: 'book-club', kind: 'private', members: [alice.user.id] } });
  const lines = [
    [bob, 'Morning! The new onboarding flow is up on staging.'],
    [bob, 'Link: https://example.com/staging/onboarding (needs VPN)'],
    [carol, 'Looks great. One nit: the "Continue" button jumps when the error text appears.'],
    [alice, 'Good catch, I will reserve the space for it.'],
    [alice, 'Also: should the password rules show before the first attempt?'],
    [carol, 'Yes, as a hint under the field.\nSame for the username rules.'],
    [bob, 'Agreed. Shipping it Thursday then?'],
  ];
  let i = 0;
  for (const [who, body] of lines) {
    i += 1;
    await server.api('POST', `/v1/rooms/${room.id}/messages`, { token: who.token, body: { client_msg_id: `s${i}`, body } });
  }
  const randomRoom = (await server.api('GET', '/v1/rooms', { token: bob.token })).rooms.find((r) => r.name === 'random');
  await server.api('POST', `/v1/rooms/${randomRoom.id}/messages`, { token: bob.token, body: { client_msg_id: 'r1', body: 'lunch?' } });
});

async function shoot(page, name) {
  const path = join(artifactsDir(), name);
  await page.screenshot({ path });
  assert.ok(statSync(path).size > 10000, `${name} looks empty`);
}

for (const scheme of ['light', 'dark']) {
  pageTest(`desktop screenshot (${scheme})`, async () => {
    const page = await openPage(browser, { viewport: { width: 1280, height: 800 }, colorScheme: scheme });
    await logInViaUI(page, server, 'alice');
    await openRoom(page, 'design-review');
    await until(async () => (await messageBodies(page)).length === 7, { what: '7 messages' });
    await page.locator('#composer-input').fill('Thursday works for me');
    // Names resolved, and the unread badge of another room visible.
    await until(async () => !(await page.locator('.author', { hasText: '…' }).count()), { what: 'names' });
    await page.locator('.room-link', { hasText: 'random' }).locator('.badge').waitFor();
    await page.locator('#invite-list > li', { hasText: 'book-club' }).waitFor();
    await page.mouse.move(0, 0);
    await shoot(page, `desktop-${scheme}.png`);
  });
}

pageTest('sign-in screenshot', async () => {
  const page = await openPage(browser, { viewport: { width: 1280, height: 800 } });
  await page.goto(server.url + '/');
  await page.locator('#auth-username').waitFor();
  await shoot(page, 'signin.png');
});

pageTest('phone screenshots (390x844)', async () => {
  const page = await openPage(browser, { viewport: { width: 390, height: 844 } });
  await logInViaUI(page, server, 'alice');
  await page.locator('.room-link', { hasText: 'design-review' }).waitFor();
  await until(async () => !(await page.locator('.room-link', { hasText: 'Direct message' }).count()), { what: 'dm named' });
  await page.locator('#invite-list > li', { hasText: 'book-club' }).waitFor();
  await shoot(page, 'phone-rooms.png');
  await openRoom(page, 'design-review');
  await until(async () => (await messageBodies(page)).length === 7, { what: '7 messages' });
  // One pane at a time: the list is hidden, and Back returns to it.
  assert.equal(await page.locator('.sidebar').isVisible(), false);
  await shoot(page, 'phone-room.png');
  await page.getByRole('button', { name: 'Back to rooms' }).click();
  await page.locator('.sidebar').waitFor({ state: 'visible' });
});
