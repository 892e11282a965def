// A real OpenID Connect provider for the sign-in tests: the npm package `oidc-provider` (a
// certified implementation), on 127.0.0.1, with one confidential client. Its login page asks only
// for a user name (no password: the test signs in as whom it likes); consent is granted for this
// first-party client. Everything else, authorization codes, PKCE, ID tokens signed with an RSA
// key, the userinfo endpoint, is the package's own behaviour, not ours.
import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

/** Display names the provider gives its accounts (others get none: the relay then asks userinfo). */
export const NAMES = { alice: 'Alice Liddell', bob: 'Bob Dylan' };

const page = (body) => `<!doctype html><html><head><meta charset="utf-8"><title>Test provider</title></head><body>${body}</body></html>`;

function readForm(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.on('data', (c) => (data += c));
    req.on('end', () => resolve(new URLSearchParams(data)));
    req.on('error', reject);
  });
}

/**
 * Starts the provider on `port` for a client whose redirect URIs are `redirectUris`. Returns
 * { issuer, clientId, clientSecret, stop }.
 */
export async function startProvider({ port, redirectUris }) {
  const issuer = `http://127.0.0.1:${port}`;
  const clientId = 'callrelay-test';
  const clientSecret = randomBytes(24).toString('hex');
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-1', use: 'sig', alg: 'RS256' };

  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [jwk] },
    cookies: { keys: [randomBytes(16).toString('hex')] },
    pkce: { required: () => true },
    ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 600, IdToken: 600, AuthorizationCode: 60 },
    claims: { openid: ['sub'], profile: ['name'], email: ['email'] },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(ctx, sub) {
      return {
        accountId: sub,
        async claims() {
          return { sub, ...(NAMES[sub] ? { name: NAMES[sub] } : {}), email: `${sub}@example.test` };
        },
      };
    },
    // A first-party client: consent is implied (the package's documented recipe).
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope('openid profile email');
      await grant.save();
      return grant;
    },
  });
  provider.on('server_error', (ctx, err) => console.error('oidc-provider server_error', err));
  const callback = provider.callback();

  const server = createServer(async (req, res) => {
    const m = req.url.match(/^\/interaction\/([^/?]+)(\/login|\/abort)?/);
    if (!m) return callback(req, res);
    try {
      const details = await provider.interactionDetails(req, res);
      if (req.method === 'GET') {
        res.setHeader('content-type', 'text/html; charset=utf-8');
        return res.end(page(`<h1>Test provider</h1><p>Prompt: ${details.prompt.name}</p>
<form method="post" action="/interaction/${details.uid}/login">
<label>User <input name="login" data-testid="idp-login" autofocus></label>
<button type="submit" data-testid="idp-submit">Sign in</button></form>
<form method="post" action="/interaction/${details.uid}/abort"><button type="submit" data-testid="idp-cancel">Cancel</button></form>`));
      }
      if (m[2] === '/abort') {
        return provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'cancelled by the user' }, { mergeWithLastSubmission: false });
      }
      const form = await readForm(req);
      const login = (form.get('login') || '').trim();
      return provider.interactionFinished(req, res, { login: { accountId: login || 'anonymous' } }, { mergeWithLastSubmission: false });
    } catch (e) {
      res.statusCode = 400;
      res.end(String(e));
    }
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    issuer,
    clientId,
    clientSecret,
    stop: () => new Promise((resolve) => { server.closeAllConnections?.(); server.close(() => resolve()); }),
  };
}
