// Moderation in the browser: a member reports a message; the moderator sees the report arrive
// live (the header's Reports count), bans the author from the report, and mutes someone from the
// member list; refusals (slow mode, muted, filtered) are shown as what they are, with the time
// left. The server's policy decides everything: the browser only offers what it may do.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { artifactsDir, pageTest, openPage, logInViaUI, openRoom, send, messageBodies, until, allowStatus, server, browser, useServerAndBrowser } from '../lib/harness.js';

useServerAndBrowser();

pageTest('a member reports a message and the moderator bans its author from the report', async () => {
  const mod = await server.register('maude');
  const mem = await server.register('mel');
  const troll = await server.register('trey');
  const room = await server.api('POST', '/v1/rooms', { token: mod.token, body: { name: 'lounge', kind: 'public', members: [] } });
  for (const who of [mem, troll]) await server.api('POST', `/v1/rooms/${room.id}/join`, { token: who.token });
  await server.api('POST', `/v1/rooms/${room.id}/messages`, { token: troll.token, body: { client_msg_id: 't1', body: 'you are all idiots' } });

  const m = await openPage(browser);
  const a = await openPage(browser);
  await logInViaUI(m, server, 'maude');
  await logInViaUI(a, server, 'mel');
  await openRoom(m, 'lounge');
  await openRoom(a, 'lounge');
  // The moderator sees the Reports button (none open yet); members do not.
  await m.locator('#reports-button').waitFor();
  assert.equal(await a.locator('#reports-button').isVisible(), false);

  // mel reports trey's message.
  const his = a.locator('#messages > li.msg', { hasText: 'you are all idiots' });
  await his.hover();
  await his.getByRole('button', { name: 'Report message' }).click();
  const dlg = a.getByRole('dialog');
  await dlg.getByRole('button', { name: 'Report' }).click();
  await dlg.locator('.form-error', { hasText: 'Say why you report it.' }).waitFor();
  await dlg.getByLabel('Why?').fill('insulting everyone');
  await dlg.getByRole('button', { name: 'Report' }).click();
  await a.locator('#toast', { hasText: 'Reported. Thank you.' }).waitFor();
  // Her own messages offer no Report; and, not a moderator, no Delete on his.
  assert.equal(await his.getByRole('button', { name: 'Delete message' }).count(), 0);

  // The moderator's count moves live; the dialog shows the report, and Ban resolves it.
  await m.locator('#reports-count', { hasText: '1' }).waitFor();
  await m.locator('#reports-button').click();
  const reports = m.getByRole('dialog');
  const item = reports.locator('.report-item', { hasText: 'insulting everyone' });
  await item.waitFor();
  assert.match(await item.textContent(), /trey/);
  assert.match(await item.textContent(), /you are all idiots/);
  await m.screenshot({ path: join(artifactsDir(), 'moderation-reports.png') });
  await item.getByRole('button', { name: 'Ban' }).click();
  await reports.getByText('No open reports.').waitFor();
  await m.keyboard.press('Escape');
  await m.locator('#reports-count').waitFor({ state: 'hidden' });
  const audit = await server.api('GET', `/v1/rooms/${room.id}/audit`, { token: mod.token });
  assert.deepEqual(audit.entries.slice(0, 2).map((e) => e.action), ['resolve_report', 'ban']);
  const members = await server.api('GET', `/v1/rooms/${room.id}/members`, { token: mod.token });
  assert.equal(members.members.some((x) => x.user.id === troll.user.id), false);
});

pageTest('a moderator mutes from the member list and the muted member is told for how long', async () => {
  const mod = await server.register('mona');
  const mem = await server.register('milo');
  const room = await server.api('POST', '/v1/rooms', { token: mod.token, body: { name: 'quiet', kind: 'public', members: [] } });
  await server.api('POST', `/v1/rooms/${room.id}/join`, { token: mem.token });
  const m = await openPage(browser);
  // The muted member's REST calls are not made; sends go over the socket: no error is logged.
  const a = await openPage(browser, { allow: [allowStatus(403, '/v1/rooms')] });
  await logInViaUI(m, server, 'mona');
  await logInViaUI(a, server, 'milo');
  await openRoom(m, 'quiet');
  await openRoom(a, 'quiet');

  await m.getByRole('button', { name: 'Members' }).click();
  const list = m.getByRole('dialog');
  const row = list.locator('.member-item', { hasText: 'milo' });
  await row.getByRole('button', { name: 'Mute' }).click();
  // No actions on oneself.
  assert.equal(await list.locator('.member-item', { hasText: 'mona' }).getByRole('button', { name: 'Mute' }).count(), 0);
  const mute = m.getByRole('dialog', { name: /^Mute .*milo/ });
  await mute.getByLabel('For how long').selectOption('3600');
  await mute.getByRole('button', { name: 'Mute' }).click();
  await m.locator('#toast', { hasText: /milo.* is muted\./ }).waitFor();

  await send(a, 'can anyone hear me?');
  const failed = a.locator('#pending > li.failed', { hasText: 'can anyone hear me?' });
  await failed.waitFor();
  assert.match(await failed.locator('.msg-status span').textContent(), /^Not sent: You are muted in this room for (60 min|1 h) more\.$/);
  await a.screenshot({ path: join(artifactsDir(), 'moderation-muted.png') });
});

pageTest('slow mode and filters are shown as what they are', async () => {
  const own = await server.register('olga');
  const mem = await server.register('ola');
  const room = await server.api('POST', '/v1/rooms', { token: own.token, body: { name: 'calm', kind: 'public', members: [] } });
  await server.api('POST', `/v1/rooms/${room.id}/join`, { token: mem.token });
  await server.api('PATCH', `/v1/rooms/${room.id}`, { token: own.token, body: { slow_mode_secs: 3, filters: { words: ['darn'], deny_domains: ['evil.example'] } } });
  const a = await openPage(browser);
  await logInViaUI(a, server, 'ola');
  await openRoom(a, 'calm');

  // A filtered message fails for good, saying which kind of rule.
  await send(a, 'well darn');
  const filtered = a.locator('#pending > li.failed', { hasText: 'well darn' });
  await filtered.waitFor();
  assert.match(await filtered.locator('.msg-status span').textContent(), /^Not sent: Blocked by this room's filters: the message contains a word/);
  await send(a, 'see https://evil.example/x');
  await a.locator('#pending > li.failed .msg-status span', { hasText: 'links to evil.example are not allowed here' }).waitFor();

  // Slow mode holds the next message and sends it by itself when the room takes it.
  await send(a, 'first');
  await until(async () => (await messageBodies(a)).includes('first'), { what: 'the first message' });
  await send(a, 'second');
  const held = a.locator('#pending > li.throttled', { hasText: 'second' });
  await held.waitFor();
  assert.match(await held.locator('.msg-status').textContent(), /^Slow mode — sends by itself in \d s$/);
  await until(async () => (await messageBodies(a)).includes('second'), { what: 'sent once slow mode allows', timeout: 10000 });
});
