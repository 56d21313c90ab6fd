// Throttles, with limits low enough to reach: a sign-in refused after a few wrong passwords
// (429 with a wait) shows the wait and keeps "Log in" disabled until it is over; messages sent
// faster than the user's send limit are refused with `rate_limited`, shown as "Sending too
// fast — retrying…", and all go out by themselves, each once; and a sign-up refused for the
// address's hourly limit says so in minutes.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { artifactsDir, pageTest, openPage, logInViaUI, openRoom, messageBodies, until, waitOnline, allowStatus, submitAll, PASSWORD, server, browser, useServerAndBrowser } from '../lib/harness.js';

// The sign-ups of this file (4) are its whole hourly budget: the last test asks for a fifth.
useServerAndBrowser(['--login-free-failures', '2', '--user-sends-per-sec', '2', '--user-sends-burst', '3', '--signups-per-ip-per-hour', '4']);

pageTest('a throttled sign-in shows the wait and disables "Log in" until it is over', async () => {
  await server.register('tom');
  // The browser logs the refusals: wrong passwords (401) and the throttle (429).
  const page = await openPage(browser, { allow: [allowStatus(401, '/v1/sessions'), allowStatus(429, '/v1/sessions')] });
  await page.goto(server.url + '/');
  await page.getByLabel('Username').fill('tom');
  const login = page.getByRole('button', { name: 'Log in' });
  const error = page.locator('#auth-error');
  // Two failures are free; after that each one makes the next attempt wait (1 s, 2 s, 4 s...).
  // Go on until a wait of 3 s or more, long enough to look at without racing its end.
  let wait = 0;
  for (let i = 0; i < 12 && wait < 3; i += 1) {
    await until(() => login.isEnabled(), { timeout: 20000, what: '"Log in" enabled' });
    await page.getByLabel('Password').fill(`wrong password ${i}`);
    await login.click();
    await until(async () => (await error.isVisible()) && !(await page.locator('#auth-form.busy').count()), { what: 'an answer' });
    const text = await error.textContent();
    const m = /^Too many attempts\. Try again in (\d+) s\.$/.exec(text);
    if (m) {
      wait = Number(m[1]);
      assert.equal(await login.isDisabled(), true, '"Log in" disabled during the wait');
    } else assert.equal(text, 'Wrong username or password.');
  }
  assert.ok(wait >= 3, 'throttled after a few wrong passwords');
  assert.equal(await login.isDisabled(), true, '"Log in" disabled during the wait');
  await page.screenshot({ path: join(artifactsDir(), 'signin-throttled.png') });
  // It counts down.
  await until(async () => Number(/in (\d+) s/.exec(await error.textContent())?.[1]) < wait, { what: 'the countdown' });
  // Enter in the password field does not get around it.
  await page.getByLabel('Password').press('Enter');
  assert.match(await error.textContent(), /^Too many attempts/);

  // Once the wait is over, the button is back and the right password gets in.
  await until(() => login.isEnabled(), { timeout: 20000, what: '"Log in" enabled again' });
  assert.equal(await error.isVisible(), false);
  await page.getByLabel('Password').fill(PASSWORD);
  await login.click();
  await page.locator('#chat').waitFor({ state: 'visible' });
  await waitOnline(page);
});

pageTest('sends over the user send limit are retried by themselves, each delivered once', async () => {
  const una = await server.register('una');
  const room = await server.api('POST', '/v1/rooms', { token: una.token, body: { name: 'fast', kind: 'private', members: [] } });
  const page = await openPage(browser);
  await logInViaUI(page, server, 'una');
  await openRoom(page, 'fast');
  // Eight at once, against a limit of 2/s with a burst of 3.
  const bodies = Array.from({ length: 8 }, (_, i) => `quick ${i + 1}`);
  await submitAll(page, bodies);
  await page.locator('#pending > li.throttled', { hasText: 'Sending too fast — retrying…' }).first().waitFor();
  assert.equal(await page.locator('#pending > li.failed').count(), 0);
  await until(async () => (await page.locator('#pending > li').count()) === 0, { timeout: 30000, what: 'all delivered' });

  // Nothing lost or doubled; the page shows what the server has, in its order.
  const { messages } = await server.api('GET', `/v1/rooms/${room.id}/messages?limit=50`, { token: una.token });
  const stored = messages.map((m) => m.body);
  assert.deepEqual([...stored].sort(), [...bodies].sort());
  assert.deepEqual(await messageBodies(page), stored);
});

pageTest('a busy server (503) holds both buttons; a wait given only as Retry-After is used too', async () => {
  // Hard to provoke for real (a full password-hashing queue): played by the test.
  const page = await openPage(browser, { allow: [allowStatus(503, '/v1/sessions'), allowStatus(429, '/v1/users')] });
  await page.route('**/v1/sessions', (route) =>
    route.fulfill({
      status: 503,
      headers: { 'Retry-After': '3' },
      contentType: 'application/json',
      body: JSON.stringify({ error: { code: 'unavailable', message: 'busy', retry_after_ms: 2500 } }),
    }),
  );
  await page.route('**/v1/users', (route) =>
    route.fulfill({ status: 429, headers: { 'Retry-After': '7' }, contentType: 'application/json', body: JSON.stringify({ error: { code: 'rate_limited', message: 'slow down' } }) }),
  );
  await page.goto(server.url + '/');
  await page.getByLabel('Username').fill('yan');
  await page.getByLabel('Password').fill(PASSWORD);
  const login = page.getByRole('button', { name: 'Log in' });
  const signup = page.getByRole('button', { name: 'Create account' });
  const error = page.locator('#auth-error');
  await login.click();
  // The body's retry_after_ms wins over the header, rounded up.
  await error.filter({ hasText: 'The server is busy. Try again in 3 s.' }).waitFor();
  assert.equal(await login.isDisabled(), true);
  assert.equal(await signup.isDisabled(), true);
  await until(async () => (await login.isEnabled()) && (await signup.isEnabled()), { what: 'both enabled again' });

  // No retry_after_ms in the body: the Retry-After header says 7 s.
  await signup.click();
  await error.filter({ hasText: 'Too many attempts. Try again in 7 s.' }).waitFor();
  assert.equal(await signup.isDisabled(), true);
  assert.equal(await login.isEnabled(), true);
});

pageTest('a sign-up over the hourly limit says how long to wait, in minutes', async () => {
  await server.register('vi');
  await server.register('wes');
  const page = await openPage(browser, { allow: [allowStatus(429, '/v1/users')] });
  await page.goto(server.url + '/');
  await page.getByLabel('Username').fill('xan');
  await page.getByLabel('Password').fill(PASSWORD);
  const signup = page.getByRole('button', { name: 'Create account' });
  await signup.click();
  const error = page.locator('#auth-error');
  await error.waitFor();
  assert.match(await error.textContent(), /^Too many attempts\. Try again in \d+ min\.$/);
  assert.equal(await signup.isDisabled(), true);
  // Signing in is another matter.
  assert.equal(await page.getByRole('button', { name: 'Log in' }).isEnabled(), true);
});
