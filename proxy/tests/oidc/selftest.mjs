#!/usr/bin/env node
// Proves the harness without the Rust side: a tiny relying party (node built-ins only) does a
// real authorization-code + PKCE + nonce flow against provider.mjs, driven by browser.mjs.
//   node selftest.mjs            (exit 0 = all passed; screenshots in artifacts/selftest/)
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, createPublicKey, randomBytes, verify } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const TMP = mkdtempSync(join(tmpdir(), 'vouchrs-oidc-selftest-'));
const ARTIFACTS = process.env.OIDC_ARTIFACTS ?? join(HERE, 'artifacts', 'selftest');
mkdirSync(ARTIFACTS, { recursive: true });
const ACCESS_TOKEN_TTL = 3;
const b64url = (buf) => Buffer.from(buf).toString('base64url');
const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// ---- the relying party -----------------------------------------------------------------------
const rp = {
  base: '', // http://localhost:PORT
  discovery: null,
  pending: new Map(), // state -> { nonce, verifier, client, rd } (single use)
  sessions: new Map(), // sid -> { claims, tokens, expiresAt, client }
  callbacks: [], // what each successful callback saw, for assertions
  refreshes: [], // { before, after } refresh tokens
};
const CLIENTS = {
  code: { client_id: 'rp-code', client_secret: 'code-secret', mode: 'query' },
  formpost: { client_id: 'rp-formpost', client_secret: 'formpost-secret', mode: 'form_post' },
};

function cookies(req) {
  return Object.fromEntries((req.headers.cookie ?? '').split(/;\s*/).filter(Boolean).map((c) => c.split(/=(.*)/s).slice(0, 2)));
}

async function tokenRequest(client, params) {
  const res = await fetch(rp.discovery.token_endpoint, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams(params),
  });
  return { status: res.status, body: await res.json() };
}

// RS256 ID token check with node:crypto only: signature against the JWKS, iss, aud, exp, nonce.
async function verifyIdToken(jwt, client, nonce) {
  const [h, p, s] = jwt.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  const claims = JSON.parse(Buffer.from(p, 'base64url'));
  const { keys } = await (await fetch(rp.discovery.jwks_uri)).json();
  const jwk = keys.find((k) => k.kid === header.kid);
  assert.ok(jwk, `unknown kid ${header.kid}`);
  assert.equal(header.alg, 'RS256');
  assert.ok(verify('sha256', Buffer.from(`${h}.${p}`), createPublicKey({ key: jwk, format: 'jwk' }), Buffer.from(s, 'base64url')), 'bad ID token signature');
  assert.equal(claims.iss, rp.discovery.issuer);
  assert.ok([].concat(claims.aud).includes(client.client_id), 'wrong aud');
  assert.ok(claims.exp > Date.now() / 1000, 'expired ID token');
  if (nonce !== undefined) assert.equal(claims.nonce, nonce, 'wrong nonce');
  return claims;
}

function startSession(res, client, tokens, claims) {
  const sid = b64url(randomBytes(16));
  rp.sessions.set(sid, { client, tokens, claims, expiresAt: Date.now() + tokens.expires_in * 1000 });
  return sid;
}

async function rpRoutes(req, res) {
  const url = new URL(req.url, rp.base);
  const html = (status, body, headers = {}) => res.writeHead(status, { 'content-type': 'text/html', ...headers }).end(`<!DOCTYPE html><title>RP</title>${body}`);
  const redirect = (location, headers = {}) => res.writeHead(302, { location, ...headers }).end();
  const session = rp.sessions.get(cookies(req).rp_sid);

  if (url.pathname === '/private') {
    if (!session) return redirect(`/signin?rd=${encodeURIComponent(url.pathname)}`);
    if (Date.now() >= session.expiresAt) {
      // Transparent refresh: the browser sees no redirect.
      const { status, body } = await tokenRequest(session.client, { grant_type: 'refresh_token', refresh_token: session.tokens.refresh_token });
      if (status !== 200) return html(401, `<p>refresh failed: ${body.error}</p>`);
      rp.refreshes.push({ before: session.tokens.refresh_token, after: body.refresh_token });
      session.claims = await verifyIdToken(body.id_token, session.client);
      session.tokens = body;
      session.expiresAt = Date.now() + body.expires_in * 1000;
    }
    const { sub, email, email_verified: emailVerified, name, groups } = session.claims;
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify({ sub, email, email_verified: emailVerified, name, groups, refreshes: rp.refreshes.length }));
  }
  if (url.pathname === '/signin') {
    const rd = encodeURIComponent(url.searchParams.get('rd') ?? '/private');
    return html(200, `<h1>Sign in</h1><ul>
<li><a href="/start?provider=code&rd=${rd}">Sign in with Test OP</a></li>
<li><a href="/start?provider=formpost&rd=${rd}">Sign in with Test OP (form_post)</a></li></ul>`);
  }
  if (url.pathname === '/start') {
    const client = CLIENTS[url.searchParams.get('provider')];
    if (!client) return html(400, 'unknown provider');
    const state = b64url(randomBytes(16));
    const nonce = b64url(randomBytes(16));
    const verifier = b64url(randomBytes(32));
    rp.pending.set(state, { nonce, verifier, client, rd: url.searchParams.get('rd') ?? '/private' });
    const authorize = new URL(rp.discovery.authorization_endpoint);
    authorize.search = new URLSearchParams({
      client_id: client.client_id, response_type: 'code', response_mode: client.mode,
      redirect_uri: `${rp.base}/callback`, scope: 'openid email profile groups offline_access',
      state, nonce, code_challenge: b64url(createHash('sha256').update(verifier).digest()), code_challenge_method: 'S256',
    });
    return redirect(authorize.href, { 'set-cookie': `rp_state=${state}; Path=/; HttpOnly; SameSite=Lax` });
  }
  if (url.pathname === '/callback') {
    let params = url.searchParams;
    if (req.method === 'POST') {
      let body = '';
      for await (const chunk of req) body += chunk;
      params = new URLSearchParams(body);
    }
    if (params.get('error')) return html(400, `<p id="error">Login failed: ${params.get('error')}</p>`);
    const state = params.get('state');
    const pending = rp.pending.get(state);
    rp.pending.delete(state);
    if (!pending || cookies(req).rp_state !== state) return html(400, '<p>bad state</p>');
    assert.equal(params.get('iss'), rp.discovery.issuer); // RFC 9207 issuer in the response
    const { status, body } = await tokenRequest(pending.client, {
      grant_type: 'authorization_code', code: params.get('code'), redirect_uri: `${rp.base}/callback`, code_verifier: pending.verifier,
    });
    if (status !== 200) return html(400, `<p>token error: ${body.error}</p>`);
    const claims = await verifyIdToken(body.id_token, pending.client, pending.nonce);
    rp.callbacks.push({ method: req.method, client: pending.client.client_id, claims, tokens: body, nonce: pending.nonce, code: params.get('code'), verifier: pending.verifier });
    const sid = startSession(res, pending.client, body, claims);
    return redirect(pending.rd, { 'set-cookie': [`rp_sid=${sid}; Path=/; HttpOnly; SameSite=Lax`, 'rp_state=; Path=/; Max-Age=0'] });
  }
  if (url.pathname === '/logout' && req.method === 'GET') {
    return html(200, '<h1>Sign out?</h1><form method="post" action="/logout"><button type="submit">Sign out</button></form>');
  }
  if (url.pathname === '/logout' && req.method === 'POST') {
    const sid = cookies(req).rp_sid;
    rp.sessions.delete(sid);
    const end = new URL(rp.discovery.end_session_endpoint);
    if (session) {
      end.search = new URLSearchParams({ id_token_hint: session.tokens.id_token, post_logout_redirect_uri: `${rp.base}/signed-out` });
    }
    return redirect(end.href, { 'set-cookie': 'rp_sid=; Path=/; Max-Age=0' });
  }
  if (url.pathname === '/signed-out') return html(200, '<p id="signed-out">Signed out of the RP.</p>');
  return html(404, 'not found');
}

// ---- processes -------------------------------------------------------------------------------
let provider;
let providerLog = '';
let issuer;
const rpServer = http.createServer((req, res) => {
  rpRoutes(req, res).catch((err) => {
    console.error('[rp]', err);
    if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end(String(err));
  });
});

function browser(...args) {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(HERE, 'browser.mjs'), ...args], { timeout: 120_000 }, (err, stdout, stderr) => {
      let json;
      try { json = JSON.parse(stdout); } catch { json = { unparsable: stdout }; }
      resolve({ code: err ? (err.code ?? 1) : 0, json, stderr });
    });
  });
}
const must = (result) => {
  assert.equal(result.code, 0, `browser.mjs failed: ${JSON.stringify(result.json)}\n${result.stderr}`);
  return result.json;
};
const testApi = async (path) => (await fetch(`${issuer}${path}`)).json();
const state = (name) => join(TMP, `${name}.state.json`);

before(async () => {
  await new Promise((resolve) => { rpServer.listen(0, '127.0.0.1', resolve); });
  rp.base = `http://localhost:${rpServer.address().port}`;
  const config = {
    clients: [
      {
        client_id: CLIENTS.code.client_id, client_secret: CLIENTS.code.client_secret,
        redirect_uris: [`${rp.base}/callback`], post_logout_redirect_uris: [`${rp.base}/signed-out`],
        grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        client_id: CLIENTS.formpost.client_id, client_secret: CLIENTS.formpost.client_secret,
        redirect_uris: [`${rp.base}/callback`], post_logout_redirect_uris: [`${rp.base}/signed-out`],
        grant_types: ['authorization_code'], response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    accounts: {
      alice: { sub: 'u-alice', email: 'alice@example.com', email_verified: true, name: 'Alice Example', groups: ['admins', 'dev'] },
      bob: { sub: 'u-bob', email: 'bob@example.org', email_verified: false, name: 'Bob Example', groups: [] },
    },
    ttl: { AccessToken: ACCESS_TOKEN_TTL, IdToken: 60, RefreshToken: 600 },
    rotateRefreshToken: true,
  };
  writeFileSync(join(TMP, 'provider.json'), JSON.stringify(config, null, 2));
  provider = spawn(process.execPath, [join(HERE, 'provider.mjs'), '--config', join(TMP, 'provider.json'), '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  provider.stderr.on('data', (chunk) => { providerLog += chunk; });
  issuer = await new Promise((resolve, reject) => {
    let out = '';
    provider.stdout.on('data', (chunk) => {
      out += chunk;
      const m = out.match(/^READY (\S+)\n/);
      if (m) resolve(m[1]);
    });
    provider.once('exit', (code) => reject(new Error(`provider exited ${code}:\n${providerLog}`)));
    setTimeout(() => reject(new Error(`provider not ready:\n${providerLog}`)), 15_000);
  });
  rp.discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
});

after(async () => {
  rpServer.close();
  if (provider && provider.exitCode === null) {
    const exited = new Promise((resolve) => { provider.once('exit', resolve); });
    provider.kill('SIGTERM');
    const code = await Promise.race([exited, sleep(5000).then(() => 'timeout')]);
    if (code !== 0) {
      provider.kill('SIGKILL');
      console.error(`provider did not exit cleanly on SIGTERM (${code})`);
      process.exitCode = 1;
    }
  }
  if (process.exitCode) console.error(`--- provider log ---\n${providerLog}`);
  rmSync(TMP, { recursive: true, force: true });
});

// ---- the scenarios ---------------------------------------------------------------------------
test('discovery advertises PKCE S256, form_post, refresh and end_session', () => {
  const d = rp.discovery;
  assert.equal(d.issuer, issuer);
  assert.match(issuer, /^http:\/\/localhost:\d+$/);
  assert.deepEqual(d.code_challenge_methods_supported, ['S256']);
  assert.ok(d.response_modes_supported.includes('form_post'));
  assert.ok(d.grant_types_supported.includes('refresh_token'));
  assert.equal(d.end_session_endpoint, `${issuer}/session/end`);
  for (const claim of ['email', 'email_verified', 'groups', 'name']) assert.ok(d.claims_supported.includes(claim), claim);
});

test('PKCE is required: an authorization request without code_challenge is refused', async () => {
  const url = new URL(rp.discovery.authorization_endpoint);
  url.search = new URLSearchParams({ client_id: 'rp-code', response_type: 'code', scope: 'openid', redirect_uri: `${rp.base}/callback`, state: 's', nonce: 'n' });
  const res = await fetch(url, { redirect: 'manual' });
  const location = new URL(res.headers.get('location'));
  assert.equal(location.searchParams.get('error'), 'invalid_request');
  assert.match(location.searchParams.get('error_description'), /PKCE/);
});

test('browser login: protected page -> sign-in page -> provider form -> back, ID token has email/groups/nonce', async () => {
  const out = must(await browser('login', '--start', `${rp.base}/private`, '--user', 'alice', '--state', state('alice'),
    '--screenshot-signin', join(ARTIFACTS, 'signin.png'), '--screenshot-final', join(ARTIFACTS, 'final.png')));
  assert.equal(out.finalUrl, `${rp.base}/private`);
  assert.equal(out.status, 200);
  assert.equal(out.loginFormShown, true);
  assert.equal(out.signInUrl, `${rp.base}/signin?rd=%2Fprivate`);
  assert.deepEqual(JSON.parse(out.bodyText), { sub: 'u-alice', email: 'alice@example.com', email_verified: true, name: 'Alice Example', groups: ['admins', 'dev'], refreshes: 0 });
  assert.ok(out.cookies.some((c) => c.name === 'rp_sid' && c.httpOnly && c.domain === 'localhost'));
  assert.ok(out.cookies.some((c) => c.name === 'op_session'), 'provider session cookie');
  assert.deepEqual(out.consoleErrors, []);

  const cb = rp.callbacks.at(-1);
  assert.equal(cb.method, 'GET');
  assert.equal(cb.claims.nonce, cb.nonce);
  assert.equal(cb.claims.email, 'alice@example.com');
  assert.equal(cb.claims.email_verified, true);
  assert.deepEqual(cb.claims.groups, ['admins', 'dev']);
  assert.ok(cb.tokens.refresh_token, 'refresh token issued');
  assert.equal(cb.tokens.expires_in, ACCESS_TOKEN_TTL);
  assert.equal(readFileSync(join(ARTIFACTS, 'signin.png')).subarray(1, 4).toString(), 'PNG');
});

test('single sign-on: a second RP login with the provider session alive skips the login form', async () => {
  const saved = JSON.parse(readFileSync(state('alice'), 'utf8'));
  saved.cookies = saved.cookies.filter((c) => c.name !== 'rp_sid');
  writeFileSync(state('alice-sso'), JSON.stringify(saved));
  const out = must(await browser('login', '--start', `${rp.base}/private`, '--user', 'alice', '--state', state('alice-sso')));
  assert.equal(out.finalUrl, `${rp.base}/private`);
  assert.equal(out.loginFormShown, false);
});

test('refresh after access-token expiry is invisible to the browser and rotates the refresh token', async () => {
  await sleep(ACCESS_TOKEN_TTL * 1000 + 500);
  const out = must(await browser('visit', '--url', `${rp.base}/private`, '--state', state('alice')));
  assert.equal(out.finalUrl, `${rp.base}/private`);
  assert.deepEqual(out.navigations.map((n) => n.status), [200], 'no redirect');
  const seen = JSON.parse(out.bodyText);
  assert.equal(seen.refreshes, 1);
  assert.equal(seen.email, 'alice@example.com', 'refreshed ID token still has the identity claims');
  assert.deepEqual(seen.groups, ['admins', 'dev']);
  const { before: old, after: rotated } = rp.refreshes.at(-1);
  assert.ok(rotated && rotated !== old, 'rotated refresh token');
  assert.deepEqual((await testApi('/test/stats')).grants.refresh_token, 1);

  // Reusing the rotated-out refresh token fails (and oidc-provider then revokes the grant).
  const { status, body } = await tokenRequest(CLIENTS.code, { grant_type: 'refresh_token', refresh_token: old });
  assert.equal(status, 400);
  assert.equal(body.error, 'invalid_grant');
});

test('an unknown user fails visibly at the provider', async () => {
  const res = await browser('login', '--start', `${rp.base}/private`, '--user', 'mallory', '--state', state('mallory'));
  assert.equal(res.code, 1);
  assert.match(res.json.error, /rejected the login/);
  assert.match(res.json.bodyText, /Unknown user "mallory"/);
  assert.ok(res.json.finalUrl.startsWith(`${issuer}/interaction/`));
});

test('form_post client: callback arrives as POST; email_verified=false passes through', async () => {
  const out = must(await browser('login', '--start', `${rp.base}/private`, '--user', 'bob', '--provider-button', 'form_post', '--state', state('bob')));
  assert.equal(out.finalUrl, `${rp.base}/private`);
  const cb = rp.callbacks.at(-1);
  assert.equal(cb.method, 'POST');
  assert.equal(cb.client, 'rp-formpost');
  assert.equal(cb.claims.email_verified, false);
  assert.deepEqual(cb.claims.groups, []);
  assert.ok(out.navigations.some((n) => n.method === 'POST' && n.url === `${rp.base}/callback`));
});

test('a second use of the same authorization code fails', async () => {
  const cb = rp.callbacks.at(-1);
  const { status, body } = await tokenRequest(CLIENTS.formpost, { grant_type: 'authorization_code', code: cb.code, redirect_uri: `${rp.base}/callback`, code_verifier: cb.verifier });
  assert.equal(status, 400);
  assert.equal(body.error, 'invalid_grant');
});

test('cancel at the provider returns access_denied to the RP', async () => {
  const out = must(await browser('login', '--start', `${rp.base}/private`, '--user', 'alice', '--abort', '--state', state('abort')));
  assert.ok(out.finalUrl.startsWith(`${rp.base}/callback?error=access_denied`), out.finalUrl);
  assert.equal(out.status, 400);
  assert.match(out.bodyText, /access_denied/);
});

test('RP-initiated logout ends the session at the RP and at the provider', async () => {
  const accounts = async () => (await testApi('/test/sessions')).sessions.map((s) => s.accountId).sort();
  assert.deepEqual(await accounts(), ['u-alice', 'u-bob']);

  const out = must(await browser('logout', '--url', `${rp.base}/logout`, '--state', state('alice')));
  assert.equal(out.finalUrl, `${rp.base}/signed-out`);
  assert.ok(out.origins.includes(issuer), 'went through the provider');
  assert.ok(out.navigations.some((n) => n.url.startsWith(`${issuer}/session/end`)));
  assert.ok(!out.cookies.some((c) => c.name === 'rp_sid' || c.name === 'op_session'), JSON.stringify(out.cookies));
  assert.deepEqual(await accounts(), ['u-bob']);
  assert.equal((await testApi('/test/stats')).endSessions, 1);

  const visit = must(await browser('visit', '--url', `${rp.base}/private`, '--state', state('alice')));
  assert.equal(visit.finalUrl, `${rp.base}/signin?rd=%2Fprivate`);
  const again = must(await browser('login', '--start', `${rp.base}/private`, '--user', 'alice', '--state', state('alice')));
  assert.equal(again.loginFormShown, true, 'provider asked for credentials again');
});

test('screenshot scenario writes a full-page PNG', async () => {
  const file = join(ARTIFACTS, 'signin-page.png');
  const out = must(await browser('screenshot', '--url', `${rp.base}/signin`, '--out', file));
  assert.equal(out.out, file);
  assert.equal(readFileSync(file).subarray(1, 4).toString(), 'PNG');
});
