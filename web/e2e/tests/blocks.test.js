// Blocking: bo blocks amy from their dm's header; amy's sends in the dm are refused with
// `blocked` and shown as failed ("You can't message this person."), not retried by themselves,
// and she can't start a dm with him. Unblocking (from Settings) lets her Retry go through. A dm
// has no owner: neither may delete the other's messages.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { artifactsDir, pageTest, openPage, logInViaUI, openRoom, send, messageBodies, until, routeSocket, allowStatus, server, browser, useServerAndBrowser } from '../lib/harness.js';

useServerAndBrowser();

pageTest("a blocked person's dm sends fail and are not retried; unblocking lets a retry through", async () => {
  const amy = await server.register('amy');
  const bo = await server.register('bo');
  const dm = await server.api('POST', '/v1/rooms', { token: amy.token, body: { name: '', kind: 'dm', members: [bo.user.id] } });
  await server.api('POST', `/v1/rooms/${dm.id}/messages`, { token: bo.token, body: { client_msg_id: 'b1', body: 'hi amy' } });
  // Starting the dm again while blocked is refused (403), which the browser logs.
  const a = await openPage(browser, { allow: [allowStatus(403, '/v1/rooms')] });
  const ws = await routeSocket(a);
  const b = await openPage(browser);
  await logInViaUI(a, server, 'amy');
  await logInViaUI(b, server, 'bo');

  await openRoom(a, 'bo');
  await until(async () => (await messageBodies(a)).join('|') === 'hi amy', { what: "bo's message" });
  // amy started the dm, but it has no owner: she may not delete bo's message.
  const his = a.locator('#messages > li.msg', { hasText: 'hi amy' });
  await his.hover();
  assert.equal(await his.getByRole('button', { name: 'Delete message' }).count(), 0);

  // bo blocks amy from the dm's header.
  await openRoom(b, 'amy');
  await b.getByRole('button', { name: 'Block', exact: true }).click();
  const confirm = b.getByRole('dialog');
  assert.match(await confirm.textContent(), /Block amy\?/);
  await confirm.getByRole('button', { name: 'Block', exact: true }).click();
  await b.getByRole('button', { name: 'Unblock', exact: true }).waitFor();
  await b.locator('#room-meta', { hasText: 'Blocked' }).waitFor();
  assert.deepEqual(await server.api('GET', '/v1/me/blocks', { token: bo.token }), { users: [{ id: amy.user.id, username: 'amy' }] });

  // amy's send is refused for good: shown as failed, sent once only.
  await send(a, 'are you there?');
  const failed = a.locator('#pending > li.failed', { hasText: 'are you there?' });
  await failed.waitFor();
  assert.equal(await failed.locator('.msg-status span').textContent(), "Not sent: You can't message this person.");
  await sleep(1500);
  assert.equal(ws.sent.filter((f) => f.op === 'send' && f.body === 'are you there?').length, 1);
  assert.equal(await failed.count(), 1);
  assert.equal((await messageBodies(b)).includes('are you there?'), false);
  await a.screenshot({ path: join(artifactsDir(), 'dm-send-blocked.png') });
  await b.screenshot({ path: join(artifactsDir(), 'dm-blocked.png') });

  // Nor can she start a dm with him.
  await a.getByRole('button', { name: 'New direct message' }).click();
  await a.getByRole('dialog').getByLabel('Username').fill('bo');
  await a.getByRole('button', { name: 'Start conversation' }).click();
  await a.getByRole('dialog').locator('.form-error', { hasText: "You can't message this person." }).waitFor();
  await a.keyboard.press('Escape');
  await a.getByRole('dialog').waitFor({ state: 'detached' });

  // bo unblocks her from Settings, where the people he blocked are listed.
  await b.getByRole('button', { name: 'Settings' }).click();
  const settings = b.getByRole('dialog');
  await settings.getByRole('listitem').filter({ hasText: 'amy' }).getByRole('button', { name: 'Unblock amy' }).click();
  await b.locator('#toast', { hasText: 'You unblocked amy.' }).waitFor();
  await settings.getByText('You have not blocked anyone.').waitFor();
  await b.keyboard.press('Escape');
  await settings.waitFor({ state: 'detached' });
  await b.getByRole('button', { name: 'Block', exact: true }).waitFor();

  // Her Retry goes through now.
  await failed.getByRole('button', { name: 'Retry' }).click();
  await until(async () => (await messageBodies(b)).includes('are you there?'), { what: 'delivered after unblocking' });
  await until(async () => (await a.locator('#pending > li').count()) === 0, { what: 'no copy left' });
});
