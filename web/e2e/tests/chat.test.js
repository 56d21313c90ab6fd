// Two people in two browser contexts: alice signs up, creates a private room and invites bob
// (who signed up too); bob sees the invitation live and accepts it; both write, and each sees
// all messages in the same order.

import assert from 'node:assert/strict';
import { pageTest, openPage, signUpViaUI, logInViaUI, openRoom, send, messageBodies, until, PASSWORD, server, browser, useServerAndBrowser } from '../lib/harness.js';

useServerAndBrowser();

pageTest('two users create a room, invite, and chat in order', async () => {
  // The browser logs the 404 of looking up a user who does not exist, which alice does once.
  const alice = await openPage(browser, { allow: [/^Failed to load resource: .* 404 \(Not Found\) \(http:\/\/[^/]+\/v1\/users\/lookup\?username=nobody\)$/] });
  const bob = await openPage(browser);
  await signUpViaUI(alice, server, 'alice');
  await signUpViaUI(bob, server, 'bob');

  // alice creates a private room and invites bob by username.
  await alice.getByRole('button', { name: 'New room' }).click();
  await alice.getByRole('dialog').getByLabel('Name', { exact: true }).fill('project-x');
  await alice.getByRole('dialog').getByText('Private', { exact: true }).click();
  await alice.getByRole('button', { name: 'Create room' }).click();
  await alice.locator('#room-title', { hasText: 'project-x' }).waitFor();
  await alice.getByRole('button', { name: 'Invite' }).click();
  // Someone who does not exist first: the dialog says so and stays open.
  await alice.getByRole('dialog').getByLabel('Username').fill('nobody');
  await alice.getByRole('dialog').getByRole('button', { name: 'Invite' }).click();
  await alice.getByRole('dialog').locator('.form-error', { hasText: 'There is no user called' }).waitFor();
  assert.equal(await alice.getByRole('dialog').locator('.form-error').textContent(), 'There is no user called “\u2068nobody\u2069”.');
  await alice.getByRole('dialog').getByLabel('Username').fill('bob');
  await alice.getByRole('dialog').getByRole('button', { name: 'Invite' }).click();
  // bob has the default setting: he is invited, not added.
  await alice.locator('#toast', { hasText: 'Invitation sent to bob.' }).waitFor();
  await alice.locator('#room-meta', { hasText: 'Private room · 1 member' }).waitFor();

  // The invitation appears in bob's list live, with no reload; accepting opens the room.
  const invite = bob.locator('#invite-list > li', { hasText: 'project-x' });
  await invite.waitFor();
  assert.match(await invite.textContent(), /from alice/);
  assert.equal(await bob.locator('.room-link', { hasText: 'project-x' }).count(), 0);
  await invite.getByRole('button', { name: 'Accept' }).click();
  await bob.locator('#room-title', { hasText: 'project-x' }).waitFor();
  await bob.locator('#invites-section').waitFor({ state: 'hidden' });
  await bob.locator('.room-link', { hasText: 'project-x' }).waitFor();
  await bob.waitForFunction(() => document.querySelector('#history-status')?.dataset.state !== 'loading');
  await alice.locator('#room-meta', { hasText: '2 members' }).waitFor();

  const script = [
    [alice, 'hi bob'],
    [bob, 'hello alice!'],
    [alice, 'how are you?'],
    [bob, 'fine, thanks\nand you?'],
    [alice, 'great'],
  ];
  for (const [page, text] of script) {
    await send(page, text);
    // Wait until both see it confirmed before the next one, so the order is the script's.
    for (const p of [alice, bob]) {
      await until(async () => (await messageBodies(p)).includes(text), { what: `"${text}" shown` });
    }
  }
  const expected = script.map(([, t]) => t);
  assert.deepEqual(await messageBodies(alice), expected);
  assert.deepEqual(await messageBodies(bob), expected);
  // No optimistic copies left behind.
  assert.equal(await alice.locator('#pending > li').count(), 0);
  assert.equal(await bob.locator('#pending > li').count(), 0);

  // Authors are shown by name (messages grouped by author show the name on the first).
  const authors = await alice.$$eval('#messages > li.msg:not(.continued) .author', (els) => els.map((e) => e.textContent));
  assert.deepEqual(authors, ['alice', 'bob', 'alice', 'bob', 'alice']);

  // Typing indicator: bob types, alice sees it.
  await bob.locator('#composer-input').fill('');
  await bob.locator('#composer-input').pressSequentially('typing');
  await alice.locator('#typing', { hasText: 'bob is typing…' }).waitFor();

  // Edit and delete own messages in place; the other side sees the change.
  const last = alice.locator('#messages > li.msg', { hasText: 'great' });
  await last.hover();
  await last.getByRole('button', { name: 'Edit message' }).click();
  const edit = alice.getByRole('textbox', { name: 'Edit message' });
  await edit.fill('great, thanks');
  await edit.press('Enter');
  await bob.locator('#messages > li.msg', { hasText: 'great, thanks' }).locator('.msg-edited').waitFor();
  const first = alice.locator('#messages > li.msg', { hasText: 'hi bob' });
  await first.hover();
  await first.getByRole('button', { name: 'Delete message' }).click();
  await alice.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
  await bob.locator('#messages > li.msg.deleted', { hasText: 'Message deleted' }).waitFor();
  assert.equal(await bob.locator('#messages > li.msg').count(), 5);
});

pageTest('unread counts rise for another room and drop when it is read', async () => {
  const carol = await openPage(browser);
  await signUpViaUI(carol, server, 'carol');
  const dave = await server.register('dave');
  const room = await server.api('POST', '/v1/rooms', { token: dave.token, body: { name: 'news', kind: 'public', members: [] } });
  // carol joins through "Browse rooms".
  await carol.locator('#browse-button').click();
  await carol.getByRole('button', { name: 'Join news' }).click();
  await carol.locator('#room-title', { hasText: 'news' }).waitFor();
  // carol goes to another room (a dm with dave, started by username).
  await carol.getByRole('button', { name: 'New direct message' }).click();
  await carol.getByRole('dialog').getByLabel('Username').fill('dave');
  await carol.getByRole('button', { name: 'Start conversation' }).click();
  await carol.locator('#room-title', { hasText: 'dave' }).waitFor();
  for (let i = 1; i <= 3; i += 1) {
    await server.api('POST', `/v1/rooms/${room.id}/messages`, { token: dave.token, body: { client_msg_id: `n${i}`, body: `news ${i}` } });
  }
  const badge = carol.locator('.room-link', { hasText: 'news' }).locator('.badge');
  await until(async () => (await badge.textContent()) === '3', { what: 'unread badge 3' });
  await openRoom(carol, 'news');
  await until(async () => !(await badge.isVisible()), { what: 'badge gone' });
  // The server agrees: the read marker moved.
  await until(async () => {
    const r = await server.api('GET', `/v1/rooms/${room.id}`, { token: (await carol.evaluate(() => localStorage.getItem('switchboard.token'))) });
    return r.unread === 0;
  }, { what: 'server unread 0' });
});

pageTest('wrong password is refused with a message; log out returns to the sign-in screen', async () => {
  await server.register('erin');
  // The browser itself logs the refused login (401) as a console error: expected here.
  const page = await openPage(browser, { allow: [/status of 401/] });
  await page.goto(server.url + '/');
  await page.getByLabel('Username').fill('erin');
  await page.getByLabel('Password').fill('not the password');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#auth-error', { hasText: 'Wrong username or password.' }).waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'auth-username');
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#chat').waitFor({ state: 'visible' });
  // The session survives a reload (token in localStorage)...
  await page.reload();
  await page.locator('#me-name', { hasText: 'erin' }).waitFor();
  // ...until logging out.
  await page.getByRole('button', { name: 'Log out', exact: true }).click();
  await page.locator('#auth').waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => localStorage.getItem('switchboard.token')), null);
});

pageTest('a malformed room link closes the room instead of throwing', async () => {
  const gus = await server.register('gus');
  await server.api('POST', '/v1/rooms', { token: gus.token, body: { name: 'plaza', kind: 'public', members: [] } });
  const page = await openPage(browser);
  await logInViaUI(page, server, 'gus');
  await openRoom(page, 'plaza');
  // A broken percent-escape: decoding it throws.
  await page.evaluate(() => (location.hash = '#/r/%E0%A4%A'));
  await page.locator('#empty-pane').waitFor();
  assert.equal(await page.locator('#room-pane').isVisible(), false);
});
