// Keyboard only: log in, open a room, send a message, and open and close a dialog with
// nothing but key presses.

import assert from 'node:assert/strict';
import { pageTest, openPage, messageBodies, until, waitOnline, PASSWORD, server, browser, useServerAndBrowser } from '../lib/harness.js';

useServerAndBrowser([], async () => {
  const kim = await server.register('kim');
  await server.api('POST', '/v1/rooms', { token: kim.token, body: { name: 'kb-room', kind: 'public', members: [] } });
});

/** Presses Tab until `predicate` holds for the focused element (at most `max` presses). */
async function tabTo(page, predicate, arg, max = 30) {
  for (let i = 0; i < max; i += 1) {
    await page.keyboard.press('Tab');
    if (await page.evaluate(predicate, arg)) return;
  }
  throw new Error('could not reach the element with Tab');
}

pageTest('log in and chat with the keyboard alone', async () => {
  const page = await openPage(browser);
  await page.goto(server.url + '/');
  // The username field has focus; Enter in the password field logs in.
  await page.keyboard.type('kim');
  await page.keyboard.press('Tab');
  await page.keyboard.type(PASSWORD);
  await page.keyboard.press('Enter');
  await page.locator('#chat').waitFor({ state: 'visible' });
  await waitOnline(page);

  // Tab to the room, open it with Enter: the composer gets focus.
  await page.locator('.room-link', { hasText: 'kb-room' }).waitFor();
  await tabTo(page, () => document.activeElement?.matches('.room-link') && document.activeElement.textContent.includes('kb-room'));
  await page.keyboard.press('Enter');
  await page.locator('#room-title', { hasText: 'kb-room' }).waitFor();
  await until(() => page.evaluate(() => document.activeElement?.id === 'composer-input'), { what: 'composer focused' });
  await page.keyboard.type('first line');
  await page.keyboard.press('Shift+Enter');
  await page.keyboard.type('second line');
  await page.keyboard.press('Enter');
  await until(async () => (await messageBodies(page)).includes('first line\nsecond line'), { what: 'sent' });
  assert.equal(await page.locator('#composer-input').inputValue(), '');

  // Up arrow in the empty composer edits the last message; Escape cancels.
  await page.keyboard.press('ArrowUp');
  await until(() => page.evaluate(() => document.activeElement?.matches('.edit-input')), { what: 'editing' });
  await page.keyboard.press('Escape');
  await page.locator('.edit-input').waitFor({ state: 'detached' });

  // The message list is one tab stop: arrows pick a message, Tab reaches its buttons.
  await page.keyboard.type('second message');
  await page.keyboard.press('Enter');
  await until(async () => (await messageBodies(page)).includes('second message'), { what: 'second sent' });
  await page.keyboard.press('Shift+Tab');
  await until(() => page.evaluate(() => document.activeElement?.id === 'timeline'), { what: 'timeline focused' });
  await page.keyboard.press('ArrowUp');
  await page.keyboard.press('ArrowUp');
  assert.equal(await page.evaluate(() => document.activeElement?.querySelector('.msg-body')?.textContent), 'first line\nsecond line');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('aria-label')), 'Edit message');
  await page.keyboard.press('Enter');
  await page.keyboard.press('Control+a');
  await page.keyboard.type('edited by keyboard');
  await page.keyboard.press('Enter');
  await until(async () => (await messageBodies(page)).includes('edited by keyboard'), { what: 'edited' });

  // A dialog opens from the keyboard, traps focus, and Escape closes it, returning focus.
  await tabTo(page, () => document.activeElement?.id === 'new-room-button');
  await page.keyboard.press('Enter');
  await page.getByRole('dialog').waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.closest('dialog') !== null), true);
  await page.keyboard.press('Escape');
  await page.getByRole('dialog').waitFor({ state: 'detached' });
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'new-room-button');

  // Focus is always visible: the focused button has an outline.
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(outline, 'none');
});
