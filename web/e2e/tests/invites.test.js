// Membership by consent: adding someone invites them (unless their setting lets people add
// them at once, or refuses everyone); the invitation shows live in their sidebar under
// "Invites", with "Accept" (joins and opens the room) and "Decline". Invitations made while a
// page was away show when it signs in or reconnects. The invite dialog says what happened.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { artifactsDir, pageTest, openPage, signUpViaUI, logInViaUI, send, messageBodies, until, waitOnline, routeSocket, allowStatus, server, browser, useServerAndBrowser } from '../lib/harness.js';

useServerAndBrowser();

/** Creates a room from the "New room" dialog; it opens. */
async function createRoom(page, name, kind = 'private') {
  await page.getByRole('button', { name: 'New room' }).click();
  await page.getByRole('dialog').getByLabel('Name', { exact: true }).fill(name);
  if (kind === 'private') await page.getByRole('dialog').getByText('Private', { exact: true }).click();
  await page.getByRole('button', { name: 'Create room' }).click();
  await page.locator('#room-title', { hasText: name }).waitFor();
}

/** Invites `username` to the open room from the Invite dialog; returns the dialog's outcome:
 * the toast, or the error shown in the dialog (which is then closed). */
async function inviteFromDialog(page, username) {
  // A toast still showing from before (a message, a join) must not be taken for the answer.
  await page.evaluate(() => (document.querySelector('#toast').hidden = true));
  await page.getByRole('button', { name: 'Invite', exact: true }).click();
  const dialog = page.getByRole('dialog');
  await dialog.getByLabel('Username').fill(username);
  await dialog.getByRole('button', { name: 'Invite' }).click();
  const toast = page.locator('#toast:not([hidden])');
  const error = dialog.locator('.form-error:not([hidden])');
  await toast.or(error).first().waitFor();
  if (await error.isVisible()) {
    const text = await error.textContent();
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
    return { error: text };
  }
  const text = await toast.textContent();
  // The next toast must not be taken for this one.
  await page.evaluate(() => (document.querySelector('#toast').hidden = true));
  return { toast: text };
}

const inviteItem = (page, name) => page.locator('#invite-list > li', { hasText: name });

pageTest('invited live: decline, invited again, accept, and the two exchange messages', async () => {
  const ann = await openPage(browser);
  const ben = await openPage(browser);
  await signUpViaUI(ann, server, 'ann');
  await signUpViaUI(ben, server, 'ben');
  assert.equal(await ben.locator('#invites-section').isVisible(), false, 'no Invites section without invitations');

  await createRoom(ann, 'plans');
  assert.deepEqual(await inviteFromDialog(ann, 'ben'), { toast: 'Invitation sent to ben.' });

  // ben sees it live (with a toast), above the rooms, and declines.
  await inviteItem(ben, 'plans').waitFor();
  await ben.locator('#toast', { hasText: 'ann invited you to' }).waitFor();
  assert.match(await inviteItem(ben, 'plans').textContent(), /plans\s*from ann/);
  const above = await ben.evaluate(() => document.querySelector('#invites-section').compareDocumentPosition(document.querySelector('#room-list')) & Node.DOCUMENT_POSITION_FOLLOWING);
  assert.ok(above, 'Invites come before the rooms');
  await inviteItem(ben, 'plans').getByRole('button', { name: 'Decline' }).click();
  await ben.locator('#invites-section').waitFor({ state: 'hidden' });
  assert.deepEqual((await server.api('GET', '/v1/invites', { token: await ben.evaluate(() => localStorage.getItem('switchboard.token')) })).invites, []);
  assert.equal(await ben.locator('.room-link', { hasText: 'plans' }).count(), 0);
  await ann.locator('#room-meta', { hasText: '1 member' }).waitFor();

  // Invited again: this time ben accepts, which opens the room.
  assert.deepEqual(await inviteFromDialog(ann, 'ben'), { toast: 'Invitation sent to ben.' });
  await inviteItem(ben, 'plans').getByRole('button', { name: 'Accept' }).click();
  await ben.locator('#room-title', { hasText: 'plans' }).waitFor();
  await ben.locator('#invites-section').waitFor({ state: 'hidden' });
  await ben.locator('.room-link.active', { hasText: 'plans' }).waitFor();
  await ann.locator('#room-meta', { hasText: '2 members' }).waitFor();

  await send(ben, 'thanks for the invite');
  await until(async () => (await messageBodies(ann)).includes('thanks for the invite'), { what: 'ann sees ben' });
  await send(ann, 'welcome!');
  await until(async () => (await messageBodies(ben)).join('|') === 'thanks for the invite|welcome!', { what: 'ben sees both' });
  // Being in the room is one thing; inviting to a private room is for its moderators.
  await server.register('cy');
  // The browser logs the refusal (403).
  ben.allow.push(allowStatus(403, /\/v1\/rooms\/[^/]+\/members/));
  const refused = await inviteFromDialog(ben, 'cy');
  assert.match(refused.error, /only moderators can add people to a private room/);
});

pageTest('invitations made while away show at sign-in and after a reconnect', async () => {
  const dot = await server.register('dot');
  const eli = await server.register('eli');
  // Initial members of a new room are invited, not added.
  await server.api('POST', '/v1/rooms', { token: dot.token, body: { name: 'early', kind: 'private', members: [eli.user.id] } });
  const page = await openPage(browser);
  const ws = await routeSocket(page);
  await logInViaUI(page, server, 'eli');
  await inviteItem(page, 'early').waitFor();
  assert.equal(await page.locator('.room-link', { hasText: 'early' }).count(), 0);

  // The socket is down while the next one is made: its live frame never comes, so the list is
  // reloaded at the next `ready`.
  ws.mode = 'refuse';
  await ws.close();
  await page.locator('#conn-banner', { hasText: 'Reconnecting' }).waitFor();
  await server.api('POST', '/v1/rooms', { token: dot.token, body: { name: 'while-away', kind: 'public', members: [eli.user.id] } });
  ws.mode = 'pass';
  await waitOnline(page, 20000);
  await inviteItem(page, 'while-away').waitFor();
  // Newest first.
  assert.deepEqual(await page.$$eval('#invite-list > li .room-name', (els) => els.map((e) => e.textContent)), ['while-away', 'early']);

  // Accepting one (from the keyboard) keeps the other.
  await inviteItem(page, 'early').getByRole('button', { name: 'Accept' }).focus();
  await page.keyboard.press('Enter');
  await page.locator('#room-title', { hasText: 'early' }).waitFor();
  await page.locator('.room-link', { hasText: 'early' }).waitFor();
  assert.deepEqual(await page.$$eval('#invite-list > li .room-name', (els) => els.map((e) => e.textContent)), ['while-away']);
});

pageTest('who can add me: "Anyone, directly" adds at once, "Nobody" refuses', async () => {
  const fay = await openPage(browser);
  const gus = await openPage(browser);
  await signUpViaUI(fay, server, 'fay');
  await signUpViaUI(gus, server, 'gus');

  // gus lets people add him at once, from Settings.
  await gus.getByRole('button', { name: 'Settings' }).click();
  const select = gus.getByRole('dialog').getByLabel('Who can add me to rooms');
  await until(async () => (await select.isEnabled()) && (await select.inputValue()) === 'invite', { what: 'settings loaded' });
  assert.deepEqual(await select.locator('option').allTextContents(), ['Anyone (invite first)', 'Anyone, directly', 'Nobody']);
  await gus.screenshot({ path: join(artifactsDir(), 'settings.png') });
  await select.selectOption({ label: 'Anyone, directly' });
  await gus.getByRole('dialog').getByRole('button', { name: 'Save' }).click();
  await gus.locator('#toast', { hasText: 'Settings saved.' }).waitFor();
  const gusToken = await gus.evaluate(() => localStorage.getItem('switchboard.token'));
  assert.deepEqual(await server.api('GET', '/v1/me/settings', { token: gusToken }), { add_policy: 'anyone' });

  await createRoom(fay, 'direct-add', 'public');
  assert.deepEqual(await inviteFromDialog(fay, 'gus'), { toast: 'gus was added to \u2068direct-add\u2069.' });
  // No invitation: the room is just there.
  await gus.locator('.room-link', { hasText: 'direct-add' }).waitFor();
  assert.equal(await gus.locator('#invites-section').isVisible(), false);
  assert.match((await inviteFromDialog(fay, 'gus')).error, /gus is in this room already/);

  // Now nobody may add him.
  await gus.getByRole('button', { name: 'Settings' }).click();
  await until(async () => (await select.isEnabled()) && (await select.inputValue()) === 'anyone', { what: 'settings loaded again' });
  await select.selectOption('nobody');
  await gus.getByRole('dialog').getByRole('button', { name: 'Save' }).click();
  await gus.getByRole('dialog').waitFor({ state: 'detached' });
  await createRoom(fay, 'closed-door', 'public');
  // The browser logs the refusal (403).
  fay.allow.push(allowStatus(403, /\/v1\/rooms\/[^/]+\/members/));
  assert.deepEqual(await inviteFromDialog(fay, 'gus'), { error: 'gus does not accept being added to rooms.' });
  assert.equal(await gus.locator('.room-link', { hasText: 'closed-door' }).count(), 0);
});
