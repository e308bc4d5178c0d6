// A real OpenID Connect / OAuth 2.0 authorization server for authsome's end-to-end tests: panva/oidc-provider
// (pinned in package.json), configured with PKCE, the device flow (RFC 8628), dynamic client registration
// (RFC 7591), refresh-token rotation, revocation (RFC 7009) and introspection (RFC 7662).
//
// Loopback only: listens on 127.0.0.1 (PORT, default 0 = ephemeral) with issuer http://127.0.0.1:<port>. Prints one
// JSON line {"issuer": ...} on stdout when ready. Login and consent use oidc-provider's development interactions
// (any login and password; "Continue" consents, "[ Cancel ]" denies), driven by headless Chromium in the tests.
//
// Behaviour per pre-registered client (all public "native" clients accept any 127.0.0.1 port, as RFC 8252 asks):
//   authsome-public        ordinary public client (PKCE, device flow, refresh tokens)
//   authsome-confidential  confidential client, client_secret_basic, secret CONFIDENTIAL_SECRET below
//   authsome-short         access tokens live OIDC_SHORT_ACCESS_TOKEN_TTL s, device codes OIDC_SHORT_DEVICE_CODE_TTL s
//   authsome-slow          the first device-code poll of every device code is answered slow_down
// Token lifetimes (seconds) come from the environment so expiry tests run fast:
//   OIDC_ACCESS_TOKEN_TTL (3600), OIDC_REFRESH_TOKEN_TTL (86400), OIDC_DEVICE_CODE_TTL (600),
//   OIDC_SHORT_ACCESS_TOKEN_TTL (4), OIDC_SHORT_DEVICE_CODE_TTL (3), OIDC_DEVICE_INTERVAL (1, seconds between polls).
// The device-code poll interval is enforced as RFC 8628 describes: polling sooner than the current interval gets
// slow_down, and every slow_down adds 5 seconds to that device code's interval.

import http from 'node:http';

import Provider from 'oidc-provider';

const env = process.env;
const num = (name, fallback) => (env[name] ? Number(env[name]) : fallback);

const ACCESS_TTL = num('OIDC_ACCESS_TOKEN_TTL', 3600);
const REFRESH_TTL = num('OIDC_REFRESH_TOKEN_TTL', 86400);
const DEVICE_TTL = num('OIDC_DEVICE_CODE_TTL', 600);
const SHORT_ACCESS_TTL = num('OIDC_SHORT_ACCESS_TOKEN_TTL', 4);
const SHORT_DEVICE_TTL = num('OIDC_SHORT_DEVICE_CODE_TTL', 3);
const DEVICE_INTERVAL = num('OIDC_DEVICE_INTERVAL', 1);
const SLOW_DOWN_STEP = 5;
export const CONFIDENTIAL_SECRET = 'confidential-client-secret-for-tests-only';

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const publicClient = (clientId) => ({
  client_id: clientId,
  application_type: 'native',
  token_endpoint_auth_method: 'none',
  redirect_uris: ['http://127.0.0.1/callback'],
  grant_types: ['authorization_code', 'refresh_token', DEVICE_GRANT],
  response_types: ['code'],
});

const isShort = (client) => client?.clientId === 'authsome-short';

const server = http.createServer();
await new Promise((resolve) => { server.listen(num('PORT', 0), '127.0.0.1', resolve); });
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    publicClient('authsome-public'),
    publicClient('authsome-short'),
    publicClient('authsome-slow'),
    {
      ...publicClient('authsome-confidential'),
      token_endpoint_auth_method: 'client_secret_basic',
      client_secret: CONFIDENTIAL_SECRET,
    },
  ],
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return { sub, email: `${sub}@example.test`, email_verified: true, preferred_username: sub, name: sub };
      },
    };
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile'],
  cookies: { keys: ['authsome-test-cookie-key-1'] },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    registration: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true, allowedPolicy: async () => true },
    userinfo: { enabled: true },
  },
  pkce: { required: () => true },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  ttl: {
    AccessToken: (ctx, token, client) => (isShort(client) ? SHORT_ACCESS_TTL : ACCESS_TTL),
    AuthorizationCode: 60,
    DeviceCode: (ctx, token, client) => (isShort(client) ? SHORT_DEVICE_TTL : DEVICE_TTL),
    Grant: REFRESH_TTL,
    IdToken: 3600,
    Interaction: 600,
    RefreshToken: REFRESH_TTL,
    Session: 3600,
  },
});

// Device-code polling: announce the interval and enforce it with slow_down (RFC 8628 section 3.5).
const polls = new Map();

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function slowDown(params, clientId) {
  const code = params.get('device_code');
  if (params.get('grant_type') !== DEVICE_GRANT || !code) return false;
  const now = Date.now();
  const state = polls.get(code) ?? { interval: DEVICE_INTERVAL, last: 0, count: 0 };
  state.count += 1;
  const tooSoon = state.last && now - state.last < state.interval * 1000 - 50;
  const forced = clientId === 'authsome-slow' && state.count === 1;
  state.last = now;
  if (tooSoon || forced) state.interval += SLOW_DOWN_STEP;
  polls.set(code, state);
  return tooSoon || forced;
}

provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && ctx.path === '/token' && ctx.is('application/x-www-form-urlencoded')) {
    const raw = await readBody(ctx.req);
    ctx.request.body = raw; // oidc-provider parses an upstream-read body itself
    const params = new URLSearchParams(raw);
    let clientId = params.get('client_id');
    const basic = /^Basic (.+)$/i.exec(ctx.get('authorization'));
    if (basic) clientId = decodeURIComponent(Buffer.from(basic[1], 'base64').toString().split(':')[0]);
    if (slowDown(params, clientId)) {
      ctx.status = 400;
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { error: 'slow_down', error_description: 'polling too quickly' };
      return;
    }
  }
  await next();
  if (ctx.path === '/device/auth' && ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
    ctx.body = { ...ctx.body, interval: DEVICE_INTERVAL };
  }
});

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ issuer })}\n`);

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
