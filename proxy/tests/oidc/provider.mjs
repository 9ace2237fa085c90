#!/usr/bin/env node
// A real OpenID provider (npm `oidc-provider`) for the proxy's integration tests.
//
//   node provider.mjs --config FILE [--port N] [--host NAME]
//
// Listens on 127.0.0.1:PORT (PORT 0 = pick a free one), issuer http://HOST:PORT (HOST defaults
// to `localhost` so browser cookies work). Prints exactly one line `READY <issuer>` on stdout
// once listening; request and error logs go to stderr. Exits 0 on SIGTERM/SIGINT.
// See README.md for the config schema, URLs and the login form.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    config: { type: 'string' },
    port: { type: 'string', default: process.env.PORT ?? '0' },
    host: { type: 'string', default: 'localhost' },
  },
});
if (!args.config) {
  console.error('usage: provider.mjs --config FILE [--port N] [--host NAME]');
  process.exit(2);
}
const config = JSON.parse(readFileSync(args.config, 'utf8'));

// Accounts are configured by login name; the provider looks them up by `sub`.
const accountsByLogin = new Map();
const accountsBySub = new Map();
for (const [login, claims] of Object.entries(config.accounts ?? {})) {
  const account = { preferred_username: login, ...claims, sub: String(claims.sub ?? login) };
  accountsByLogin.set(login, account);
  accountsBySub.set(account.sub, account);
}

// ---- storage: an in-memory adapter we can enumerate (for GET /test/sessions) ----------------
const store = new Map(); // `${model}:${id}` -> { payload, expiresAt (ms, 0 = never) }
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest', 'PreAuthorizedCode']);
const live = (entry) => entry && (!entry.expiresAt || entry.expiresAt > Date.now());
class MemoryAdapter {
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  async upsert(id, payload, expiresIn) {
    store.set(this.key(id), { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : 0 });
  }
  async find(id) {
    const entry = store.get(this.key(id));
    return live(entry) ? entry.payload : undefined;
  }
  async #findBy(field, value) {
    for (const [key, entry] of store) {
      if (key.startsWith(`${this.model}:`) && live(entry) && entry.payload[field] === value) return entry.payload;
    }
    return undefined;
  }
  findByUid(uid) { return this.#findBy('uid', uid); }
  findByUserCode(userCode) { return this.#findBy('userCode', userCode); }
  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) { store.delete(this.key(id)); }
  async revokeByGrantId(grantId) {
    for (const [key, entry] of store) {
      if (GRANTABLE.has(key.split(':')[0]) && entry.payload.grantId === grantId) store.delete(key);
    }
  }
}

// Fresh signing keys on every start: restarting the provider changes the `kid`, which is how a
// test exercises the proxy's JWKS re-fetch on an unknown key.
const jwk = (keyPair, alg) => ({ ...keyPair.privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid: `${alg.toLowerCase()}-${randomBytes(6).toString('hex')}` });
const jwks = {
  keys: [
    jwk(generateKeyPairSync('rsa', { modulusLength: 2048 }), 'RS256'),
    jwk(generateKeyPairSync('ec', { namedCurve: 'P-256' }), 'ES256'),
  ],
};

// Minimal HTML pages (no external fonts or scripts: the test machine has no internet).
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>${esc(title)}</title><style>body{font-family:sans-serif;max-width:28rem;margin:2rem auto}
label,input,button{display:block;margin:.4rem 0}[role=alert]{color:#a00}</style></head>
<body><h1>${esc(title)}</h1>${body}</body></html>`;

const stats = { grants: {}, grantErrors: {}, authorizationErrors: {}, endSessions: 0 };
const bump = (map, key) => { map[key] = (map[key] ?? 0) + 1; };

// ---- listen first, so that --port 0 works: the issuer needs the real port ------------------
let handler = (req, res) => { res.writeHead(503).end(); };
const server = http.createServer((req, res) => {
  const started = Date.now();
  res.on('finish', () => console.error(`${req.method} ${req.url.split('?')[0]} ${res.statusCode} ${Date.now() - started}ms`));
  handler(req, res);
});
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(args.port), '127.0.0.1', resolve);
});
const issuer = `http://${args.host}:${server.address().port}`;

const ttl = config.ttl ?? {};
const rotate = Boolean(config.rotateRefreshToken);

const provider = new Provider(issuer, {
  adapter: MemoryAdapter,
  clients: config.clients ?? [],
  jwks,
  findAccount: async (ctx, sub) => {
    const account = accountsBySub.get(sub);
    if (!account) return undefined;
    return { accountId: sub, claims: async () => ({ ...account }) };
  },
  // Scope -> claims. `groups` needs the `groups` scope (like Dex); overridable via config.claims.
  claims: config.claims ?? {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  // Put scope-derived claims into the ID token too: the proxy reads identity from the ID token.
  conformIdTokenClaims: false,
  pkce: { required: () => true }, // S256 is the only method oidc-provider v9 accepts
  // Every client with the refresh_token grant gets a refresh token, `offline_access` or not
  // (oidc-provider drops offline_access unless prompt=consent, like Google).
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => rotate,
  ttl: {
    AccessToken: ttl.AccessToken ?? 3600,
    IdToken: ttl.IdToken ?? 3600,
    RefreshToken: ttl.RefreshToken ?? 86400,
    AuthorizationCode: ttl.AuthorizationCode ?? 60,
    Interaction: ttl.Interaction ?? 600,
    Session: ttl.Session ?? 86400,
    Grant: ttl.Grant ?? 86400,
  },
  // Consent is automatic: every requested OIDC scope and claim is granted to these test clients.
  loadExistingGrant: async (ctx) => {
    const { oidc } = ctx;
    const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
    const grant = (grantId && await oidc.provider.Grant.find(grantId))
      || new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
    grant.addOIDCScope([...oidc.requestParamOIDCScopes].join(' '));
    grant.addOIDCClaims([...oidc.requestParamClaims]);
    await grant.save();
    return grant;
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // Distinct cookie names: cookies ignore ports, so the proxy on another localhost port shares them.
  cookies: { names: { session: 'op_session', interaction: 'op_interaction', resume: 'op_resume' }, keys: [randomBytes(32).toString('hex')] },
  clientBasedCORS: () => true,
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // Auto-submits "yes, sign me out" (ends the whole provider session); the button is there
      // for clients without JavaScript.
      logoutSource: async (ctx, form) => {
        ctx.body = page('Sign out', `${form}
<button id="op-logout" type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
<script>{const f=document.getElementById('op.logoutForm');const i=document.createElement('input');
i.type='hidden';i.name='logout';i.value='yes';f.appendChild(i);f.submit();}</script>`);
      },
      postLogoutSuccessSource: async (ctx) => {
        ctx.body = page('Signed out', '<p id="op-signed-out">You are signed out of the test provider.</p>');
      },
    },
  },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Provider error', `<p role="alert" id="op-error">${esc(out.error)}: ${esc(out.error_description)}</p>`);
  },
});
provider.proxy = false;

for (const event of ['server_error', 'authorization.error', 'grant.error', 'end_session.error', 'userinfo.error', 'revocation.error']) {
  provider.on(event, (ctx, err) => {
    console.error(`[${event}] ${err.name}: ${err.message}${err.error_detail ? ` (${err.error_detail})` : ''}`);
    if (event === 'grant.error') bump(stats.grantErrors, ctx.oidc?.params?.grant_type ?? 'unknown');
    if (event === 'authorization.error') bump(stats.authorizationErrors, err.error ?? err.name);
  });
}
provider.on('grant.success', (ctx) => bump(stats.grants, ctx.oidc.params.grant_type));
provider.on('end_session.success', () => { stats.endSessions += 1; });

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' }).end(body);
}

function loginForm(uid, details, { error, login } = {}) {
  return page('Sign in to the test provider', `
${error ? `<p role="alert" id="op-error">${esc(error)}</p>` : ''}
<p>Client <code>${esc(details.params.client_id)}</code> asks for <code>${esc(details.params.scope)}</code>.</p>
<form id="op-login" method="post" action="/interaction/${esc(uid)}/login">
  <label for="username">Username</label>
  <input id="username" name="username" autocomplete="username" required autofocus value="${esc(login ?? details.params.login_hint ?? '')}">
  <label for="password">Password (anything)</label>
  <input id="password" name="password" type="password" autocomplete="current-password">
  <button id="op-submit" type="submit">Sign in</button>
</form>
<p><a id="op-cancel" href="/interaction/${esc(uid)}/abort">Cancel</a></p>`);
}

// Our own interaction pages (instead of devInteractions, which accept any name and load web fonts).
async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, 'text/plain', 'interaction mismatch');
  if (action === 'abort') {
    return provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'End-User aborted interaction' }, { mergeWithLastSubmission: false });
  }
  if (details.prompt.name === 'login') {
    if (req.method === 'GET') return send(res, 200, 'text/html', loginForm(uid, details));
    if (req.method === 'POST' && action === 'login') {
      const login = (await readForm(req)).get('username') ?? '';
      const account = accountsByLogin.get(login);
      if (!account) return send(res, 401, 'text/html', loginForm(uid, details, { error: `Unknown user "${login}".`, login }));
      return provider.interactionFinished(req, res, { login: { accountId: account.sub } }, { mergeWithLastSubmission: false });
    }
  }
  if (details.prompt.name === 'consent') {
    // Not reached while loadExistingGrant grants everything; kept so consent never blocks a test.
    const { grantId, session, params, prompt: { details: missing } } = details;
    const grant = (grantId && await provider.Grant.find(grantId))
      || new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scope] of Object.entries(missing.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scope.join(' '));
    return provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
  }
  return send(res, 400, 'text/plain', `unsupported prompt ${details.prompt.name}`);
}

// Test-only endpoints (never in a real provider): observe what happened at the provider.
function testEndpoint(req, res, path) {
  if (path === '/test/sessions') {
    const sessions = [];
    for (const [key, entry] of store) {
      if (!key.startsWith('Session:') || !live(entry) || !entry.payload.accountId) continue;
      const { accountId, loginTs, authorizations } = entry.payload;
      sessions.push({ accountId, loginTs, clients: Object.keys(authorizations ?? {}) });
    }
    return send(res, 200, 'application/json', JSON.stringify({ sessions }));
  }
  if (path === '/test/stats') return send(res, 200, 'application/json', JSON.stringify(stats));
  return send(res, 404, 'text/plain', 'not found');
}

// Fail fast on bad client metadata (oidc-provider would otherwise only fail on first use).
try {
  for (const { client_id: id } of config.clients ?? []) {
    if (!await provider.Client.find(String(id))) throw new Error(`client ${id} not found`);
  }
} catch (err) {
  console.error(`invalid client configuration: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}`);
  process.exit(1);
}

const callback = provider.callback();
handler = async (req, res) => {
  const path = new URL(req.url, issuer).pathname;
  const match = path.match(/^\/interaction\/([\w-]+)(?:\/(login|abort))?$/);
  try {
    if (match) return await interaction(req, res, match[1], match[2]);
    if (path.startsWith('/test/') && req.method === 'GET') return testEndpoint(req, res, path);
    return callback(req, res);
  } catch (err) {
    console.error(`[interaction] ${err.name}: ${err.message}`);
    if (!res.headersSent) send(res, 400, 'text/html', page('Provider error', `<p role="alert" id="op-error">${esc(err.name)}: ${esc(err.message)}</p>`));
  }
};

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
console.log(`READY ${issuer}`);
