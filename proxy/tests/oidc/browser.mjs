#!/usr/bin/env node
// Drives Debian's headless Chromium (via playwright-core) through one scenario and prints ONE
// JSON object on stdout; progress logs go to stderr. Exit 0 on success, 1 on a failed scenario
// (stdout then holds {error, finalUrl, bodyText, navigations}), 2 on bad arguments.
//
//   node browser.mjs login      --start URL [--home PROXY_URL] --user NAME [--password P] [--provider-button TEXT]
//                               [--abort] [--screenshot-signin FILE] [--screenshot-final FILE]
//   node browser.mjs visit      --url URL [--screenshot FILE]
//   node browser.mjs logout     --url PROXY_SIGN_OUT_URL
//   node browser.mjs screenshot --url URL --out FILE
//   node browser.mjs passkey-add     --url PASSKEY_PAGE_OR_INVITATION_URL [--name NAME]
//   node browser.mjs passkey-login   --start URL [--email ADDRESS]
//   node browser.mjs passkey-remove  --url PASSKEY_PAGE
//   node browser.mjs passkey-capture --url SIGN_IN_URL [--count N] [--email ADDRESS]
// Passkey scenarios run with the DevTools virtual authenticator (CTAP2, internal transport,
// resident keys, user verification on and passing). --authenticator FILE keeps its credentials
// (private keys included: test-only) between runs: loaded before, saved after.
// --without-user-verification: an authenticator that cannot verify the user (presence only),
// behind a client that asks for no verification whatever the server wanted, so the server's
// policy alone decides.
// Common: [--state FILE] (alias --cookie-jar: Playwright storageState, loaded if the file exists,
// saved after a successful scenario), [--timeout MS] (per step, default 15000),
// [--cookie-values] (include cookie values in the output). See README.md.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';

import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
// Without the background-networking flags Chromium keeps trying to reach the internet.
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      start: { type: 'string' }, home: { type: 'string' }, url: { type: 'string' }, user: { type: 'string' },
      password: { type: 'string', default: 'password' }, 'provider-button': { type: 'string' },
      abort: { type: 'boolean' }, 'screenshot-signin': { type: 'string' },
      'screenshot-final': { type: 'string' }, screenshot: { type: 'string' }, out: { type: 'string' },
      state: { type: 'string' }, 'cookie-jar': { type: 'string' }, timeout: { type: 'string', default: '15000' },
      'cookie-values': { type: 'boolean' },
      authenticator: { type: 'string' }, name: { type: 'string' }, email: { type: 'string' },
      count: { type: 'string', default: '1' }, 'without-user-verification': { type: 'boolean' },
    },
  });
} catch (err) {
  usage(err.message);
}
const opts = parsed.values;
const scenarioName = parsed.positionals[0];
const TIMEOUT = Number(opts.timeout);
const stateFile = opts.state ?? opts['cookie-jar'];

function usage(message) {
  process.stdout.write(`${JSON.stringify({ error: `usage: ${message}` })}\n`);
  process.exit(2);
}
const log = (...parts) => console.error('[browser]', ...parts);
const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });
// page.evaluate waits for a pending navigation to commit; never let that hang a run.
const bounded = (promise, ms, fallback) => Promise.race([promise.catch(() => fallback), sleep(ms).then(() => fallback)]);
const origin = (url) => { try { return new URL(url).origin; } catch { return ''; } };

// ---- page instrumentation --------------------------------------------------------------------
const navigations = []; // every main-frame document response, redirects included: {method,url,status}
const consoleErrors = [];
const pending = new Set(); // main-frame navigation requests in flight
let lastNavEvent = 0;

function instrument(page) {
  const isMainNav = (request) => {
    try { return request.isNavigationRequest() && request.frame() === page.mainFrame(); } catch { return false; }
  };
  page.on('request', (request) => {
    if (!isMainNav(request)) return;
    pending.add(request);
    lastNavEvent = Date.now();
  });
  page.on('response', (response) => {
    const request = response.request();
    if (!isMainNav(request)) return;
    navigations.push({ method: request.method(), url: response.url(), status: response.status() });
    log(request.method(), response.url(), response.status());
  });
  const done = (request) => { if (pending.delete(request)) lastNavEvent = Date.now(); };
  page.on('requestfinished', done);
  page.on('requestfailed', (request) => {
    if (!isMainNav(request)) return;
    done(request);
    navigations.push({ method: request.method(), url: request.url(), status: 0, error: request.failure()?.errorText });
  });
  page.on('framenavigated', (frame) => { if (frame === page.mainFrame()) lastNavEvent = Date.now(); });
  page.on('console', (msg) => {
    // Chromium asks every origin for /favicon.ico; a 404 there says nothing about the page.
    if (msg.type() !== 'error' || msg.location()?.url?.endsWith('/favicon.ico')) return;
    consoleErrors.push(msg.text());
  });
  page.on('pageerror', (err) => consoleErrors.push(String(err?.message ?? err)));
}

// Wait until the page stops navigating: redirect chains, auto-submitting form_post and logout
// pages all produce several navigations after one click.
async function settle(page, quietMs = 400) {
  const deadline = Date.now() + TIMEOUT;
  while (Date.now() < deadline) {
    const quiet = pending.size === 0 && Date.now() - lastNavEvent >= quietMs;
    if (quiet) {
      const ready = await bounded(page.evaluate(() => document.readyState), 1000, 'navigating');
      if (ready === 'complete') return;
    }
    await sleep(100);
  }
  throw new Error(`page did not settle within ${TIMEOUT} ms`);
}

async function goto(page, url) {
  await page.goto(url, { waitUntil: 'load' });
  await settle(page);
}

async function bodyText(page) {
  const text = await bounded(page.evaluate(() => document.body?.innerText ?? ''), 2000, '');
  return text.length > 20000 ? `${text.slice(0, 20000)}…` : text;
}

async function shot(page, file, fullPage = true) {
  mkdirSync(dirname(file), { recursive: true });
  await page.screenshot({ path: file, fullPage });
  log('screenshot', file);
}

async function summary(page, context) {
  const cookies = (await context.cookies()).map((c) => ({
    name: c.name, domain: c.domain, path: c.path, secure: c.secure, httpOnly: c.httpOnly,
    sameSite: c.sameSite, expires: c.expires, ...(opts['cookie-values'] ? { value: c.value } : {}),
  }));
  const documents = navigations.filter((n) => n.status);
  return {
    finalUrl: page.url(),
    status: documents.at(-1)?.status ?? null,
    bodyText: await bodyText(page),
    cookies,
    consoleErrors,
    navigations,
  };
}

const LOGIN_FIELD = 'input[name="username"], input[name="login"], input#username, input[type="email"]';
const SUBMIT = 'button[type="submit"], button:not([type]), input[type="submit"]';

async function visible(locator) {
  return (await locator.count()) > 0 && locator.isVisible();
}

// ---- the virtual authenticator ---------------------------------------------------------------
let authenticator = null; // { cdp, authenticatorId }

async function addAuthenticator(context, page) {
  const verifies = !opts['without-user-verification'];
  if (!verifies) await context.addInitScript(askForNoUserVerification);
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', transport: 'internal', hasResidentKey: true,
      hasUserVerification: verifies, isUserVerified: verifies, automaticPresenceSimulation: true,
    },
  });
  const file = opts.authenticator;
  if (file && existsSync(file)) {
    for (const credential of JSON.parse(readFileSync(file, 'utf8'))) {
      await cdp.send('WebAuthn.addCredential', { authenticatorId, credential });
    }
  }
  authenticator = { cdp, authenticatorId };
}

// Runs in the page: rewrites the options of every WebAuthn call to userVerification
// "discouraged" (and drops the credProtect request that would make Chromium refuse a key that
// cannot verify), as a client ignoring the relying party's requirements would.
function askForNoUserVerification() {
  const credentials = navigator.credentials;
  const create = credentials.create.bind(credentials);
  const get = credentials.get.bind(credentials);
  credentials.create = (options) => {
    const pk = options.publicKey;
    pk.authenticatorSelection = { ...pk.authenticatorSelection, userVerification: 'discouraged' };
    if (pk.extensions) {
      delete pk.extensions.credentialProtectionPolicy;
      delete pk.extensions.enforceCredentialProtectionPolicy;
    }
    return create(options);
  };
  credentials.get = (options) => {
    options.publicKey.userVerification = 'discouraged';
    return get(options);
  };
}

async function saveAuthenticator() {
  if (!authenticator || !opts.authenticator) return;
  const { cdp, authenticatorId } = authenticator;
  const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  mkdirSync(dirname(opts.authenticator), { recursive: true });
  writeFileSync(opts.authenticator, JSON.stringify(credentials));
}

async function credentialCount() {
  if (!authenticator) return 0;
  const { cdp, authenticatorId } = authenticator;
  return (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials.length;
}

// Clicks a passkey form's button; the script then either navigates on (outcome "navigated")
// or shows a readable error on the page (outcome "error", with its text).
async function submitPasskeyForm(page, button) {
  const box = page.locator('[data-passkey-error]').first();
  // Any new main-frame document counts (adding a passkey reloads the same page).
  const navigated = page.waitForEvent('framenavigated', { predicate: (frame) => frame === page.mainFrame(), timeout: TIMEOUT });
  await button.click();
  const outcome = await Promise.race([
    navigated.then(() => 'navigated'),
    box.waitFor({ state: 'visible', timeout: TIMEOUT }).then(() => 'error'),
  ]);
  await settle(page);
  const passkeyError = outcome === 'error' ? (await box.innerText()).trim() : '';
  if (passkeyError) log('passkey error shown:', passkeyError);
  return { outcome, passkeyError };
}

// ---- scenarios -------------------------------------------------------------------------------
const scenarios = {
  async 'passkey-add'(page) {
    await goto(page, opts.url);
    const form = page.locator('form[data-passkey-register]');
    if (!(await form.count())) throw new Error('no passkey registration form on the page');
    if (opts.name) await form.locator('input[name="name"]').fill(opts.name);
    const result = await submitPasskeyForm(page, form.locator('button[type="submit"]'));
    return { ...result, authenticatorCredentials: await credentialCount() };
  },

  async 'passkey-login'(page) {
    await goto(page, opts.start);
    const form = page.locator('form[data-passkey-login]');
    if (!(await form.count())) throw new Error('no passkey button on the sign-in page');
    if (opts.email) await form.locator('input[name="email"]').fill(opts.email);
    return submitPasskeyForm(page, form.getByRole('button', { name: /passkey/i }));
  },

  async 'passkey-remove'(page) {
    await goto(page, opts.url);
    const remove = page.getByRole('button', { name: /remove/i }).first();
    if (!(await remove.count())) throw new Error('no passkey to remove on the page');
    await remove.click();
    await settle(page);
    return {};
  },

  // Assertions made by the real authenticator but never submitted, each with the ceremony
  // cookie that goes with it: the Rust tests replay and tamper with them.
  async 'passkey-capture'(page) {
    await goto(page, opts.url);
    const captured = [];
    for (let i = 0; i < Number(opts.count); i += 1) {
      const credential = await page.evaluate((email) => window.vouchrsPasskey.assertion(email), opts.email ?? '');
      const cookie = (await page.context().cookies()).find((c) => c.name.endsWith('_pklogin'));
      if (!cookie) throw new Error('no passkey ceremony cookie was set');
      captured.push({ cookie: { name: cookie.name, value: cookie.value }, credential });
    }
    return { captured };
  },


  async login(page) {
    // The proxy; any other origin is the provider. --home names it when --start is elsewhere
    // (a test that starts at the provider's authorization URL).
    const home = opts.home ? origin(opts.home) : origin(opts.start);
    const result = { signInUrl: null, loginFormShown: false };
    await goto(page, opts.start);

    if (origin(page.url()) === home) {
      // The proxy's sign-in page lists the providers.
      result.signInUrl = page.url();
      if (opts['screenshot-signin']) await shot(page, opts['screenshot-signin']);
      const name = opts['provider-button'];
      let choice = name
        ? page.getByRole('link', { name }).or(page.getByRole('button', { name })).first()
        : page.locator('a[href*="provider="]').first();
      if (!name && !(await choice.count())) choice = page.locator('button').first();
      if (!(await choice.count())) throw new Error(`no provider ${name ? `"${name}" ` : ''}link or button on the sign-in page`);
      log('choosing provider:', (await choice.innerText()).trim());
      await choice.click();
      await settle(page);
    }

    // At the provider: login form, then any consent/confirmation form, until back at the proxy.
    for (let step = 0; step < 6 && origin(page.url()) !== home; step += 1) {
      const field = page.locator(LOGIN_FIELD).first();
      if (await visible(field)) {
        if (result.loginFormShown) throw new Error('the provider rejected the login (form shown again)');
        result.loginFormShown = true;
        if (opts.abort) {
          await page.getByRole('link', { name: /cancel/i }).or(page.getByRole('button', { name: /cancel/i })).first().click();
          await settle(page);
          continue;
        }
        await field.fill(opts.user);
        const password = page.locator('input[type="password"]').first();
        if (await visible(password)) await password.fill(opts.password);
        const form = page.locator('form').filter({ has: page.locator(LOGIN_FIELD) }).first();
        const submit = form.locator(SUBMIT).first();
        if (await submit.count()) await submit.click(); else await field.press('Enter');
        await settle(page);
        continue;
      }
      const button = page.locator(SUBMIT).first(); // consent or another confirmation page
      if (!(await visible(button))) break;
      log('clicking provider button:', (await button.innerText().catch(() => '')).trim());
      await button.click();
      await settle(page);
    }
    if (origin(page.url()) !== home) throw new Error(`login did not return to ${home}`);
    if (opts['screenshot-final']) await shot(page, opts['screenshot-final']);
    return result;
  },

  async visit(page) {
    await goto(page, opts.url);
    if (opts.screenshot) await shot(page, opts.screenshot);
    return {};
  },

  async logout(page) {
    const home = origin(opts.url);
    await goto(page, opts.url); // GET: the proxy's confirmation page
    const button = page.locator('form[method="post" i]').locator(SUBMIT).first();
    if (!(await button.count())) throw new Error('no POST form with a submit button on the sign-out page');
    await button.click();
    await settle(page);
    // RP-initiated logout: click through any confirmation the provider still shows.
    for (let step = 0; step < 4 && origin(page.url()) !== home; step += 1) {
      const confirm = page.locator(SUBMIT).first();
      if (!(await visible(confirm))) break;
      await confirm.click();
      await settle(page);
    }
    return { origins: [...new Set(navigations.map((n) => origin(n.url)))] };
  },

  async screenshot(page) {
    await goto(page, opts.url);
    await shot(page, opts.out);
    return { out: opts.out };
  },
};

// ---- run -------------------------------------------------------------------------------------
const REQUIRED = {
  login: ['start', 'user'], visit: ['url'], logout: ['url'], screenshot: ['url', 'out'],
  'passkey-add': ['url'], 'passkey-login': ['start'], 'passkey-remove': ['url'], 'passkey-capture': ['url'],
};
if (!REQUIRED[scenarioName]) usage(`first argument must be one of ${Object.keys(REQUIRED).join(', ')}`);
for (const name of REQUIRED[scenarioName]) if (!opts[name]) usage(`${scenarioName} needs --${name}`);
if (!(TIMEOUT > 0)) usage('--timeout must be a positive number of milliseconds');

let browser;
let page;
let printed = false;
function print(obj) {
  if (printed) return;
  printed = true;
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}
async function failure(err) {
  return {
    error: String(err?.message ?? err).replace(/\u001b\[\d+m/g, ''), // Playwright colours its call log
    finalUrl: page?.url() ?? null,
    bodyText: page ? await bodyText(page) : '',
    navigations,
    consoleErrors,
  };
}

// Backstop: a scenario never outlives a few step timeouts, even if something hangs.
const backstop = setTimeout(async () => {
  print(await Promise.race([failure(new Error('scenario timed out')), sleep(2000).then(() => ({ error: 'scenario timed out' }))]));
  await Promise.race([browser?.close(), sleep(3000)]);
  process.exit(1);
}, TIMEOUT * 6);

try {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS, timeout: TIMEOUT });
  const context = await browser.newContext({
    storageState: stateFile && existsSync(stateFile) ? stateFile : undefined,
    viewport: { width: 1280, height: 800 },
  });
  context.setDefaultTimeout(TIMEOUT);
  context.setDefaultNavigationTimeout(TIMEOUT);
  page = await context.newPage();
  instrument(page);
  if (scenarioName.startsWith('passkey-') || opts.authenticator) await addAuthenticator(context, page);
  const extra = await scenarios[scenarioName](page);
  await saveAuthenticator();
  if (stateFile) {
    mkdirSync(dirname(stateFile), { recursive: true });
    await context.storageState({ path: stateFile });
  }
  print({ scenario: scenarioName, ...(await summary(page, context)), ...extra });
} catch (err) {
  log('failed:', err?.stack ?? err);
  print(await failure(err));
  process.exitCode = 1;
} finally {
  clearTimeout(backstop);
  await browser?.close().catch(() => {});
}
