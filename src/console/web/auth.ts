/**
 * Signing in: OpenID Connect authorization code with PKCE, as a public client, at the person
 * issuer the broker names in `/console/config.json`. The ID token lives in this module's memory
 * and nowhere else: not in a URL, a cookie, localStorage, sessionStorage or IndexedDB. A reload
 * or sign-out forgets it. What must survive the trip to the issuer (state, nonce, the PKCE
 * verifier, where to come back to; none of them a token) waits in sessionStorage and is removed
 * the moment the issuer sends the browser back.
 */

export interface ConsoleDocument {
  issuer: string;
  client_id: string;
  scopes: string[];
  authorization_endpoint: string;
  token_endpoint: string;
  end_session_endpoint?: string;
  development: boolean;
}

export interface Session {
  idToken: string;
  sub: string;
  iss: string;
  name: string;
  expiresAt: number;
}

const PENDING_KEY = 'jit-console.sign-in';
const CALLBACK_PATH = '/console/callback';

let session: Session | null = null;

export const currentSession = (): Session | null => session;

export class SignInError extends Error {}

/** Forgets the ID token. */
export function forget(): void {
  session = null;
}

const base64url = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const random = (bytes = 32) => base64url(crypto.getRandomValues(new Uint8Array(bytes)));

/** Sends the browser to the issuer; it comes back to /console/callback, then to `returnTo`. */
export async function beginSignIn(config: ConsoleDocument, returnTo: string): Promise<never> {
  const verifier = random(48);
  const challenge = base64url(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier))));
  const pending = { state: random(), nonce: random(), verifier, returnTo, redirectUri: `${location.origin}${CALLBACK_PATH}` };
  sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
  const url = new URL(config.authorization_endpoint, location.origin);
  const params = {
    response_type: 'code',
    client_id: config.client_id,
    redirect_uri: pending.redirectUri,
    scope: config.scopes.join(' '),
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  };
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
  location.assign(url.href);
  return new Promise<never>(() => undefined);
}

/**
 * Back from the issuer: checks `state` (and `iss`, RFC 9207) before anything else, then reports
 * the issuer's refusal or redeems the code with the PKCE verifier, checks the ID token's `iss`,
 * `aud`, `nonce` and `exp`, and keeps it in memory. The code leaves the address bar and the
 * history entry first. Returns where to go next.
 */
export async function completeSignIn(config: ConsoleDocument): Promise<string> {
  const params = new URLSearchParams(location.search);
  history.replaceState(null, '', '/console');
  const saved = sessionStorage.getItem(PENDING_KEY);
  sessionStorage.removeItem(PENDING_KEY);
  const pending = saved ? (JSON.parse(saved) as { state: string; nonce: string; verifier: string; returnTo: string; redirectUri: string }) : null;

  // Nothing of the URL is shown before its state is this page's: anyone can send a link to
  // /console/callback, with any error text in it, to put on the broker's own page.
  if (!pending || params.get('state') !== pending.state) throw new SignInError('This sign-in link is not one this page started.');
  if (params.has('iss') && params.get('iss') !== config.issuer) throw new SignInError('The answer came from another issuer than the console\'s.');
  if (params.has('error')) throw new SignInError(`The sign-in issuer refused: ${params.get('error_description') ?? params.get('error')}`);
  const code = params.get('code');
  if (!code) throw new SignInError('The sign-in issuer sent no code.');

  let answer: { id_token?: unknown; error?: unknown; error_description?: unknown };
  try {
    const response = await fetch(new URL(config.token_endpoint, location.origin), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code,
        redirect_uri: pending.redirectUri,
        client_id: config.client_id,
        code_verifier: pending.verifier,
      }),
      credentials: 'omit',
      cache: 'no-store',
      referrerPolicy: 'no-referrer',
    });
    answer = (await response.json()) as typeof answer;
  } catch {
    throw new SignInError('The sign-in issuer\'s token endpoint cannot be reached.');
  }
  if (typeof answer.id_token !== 'string') throw new SignInError(`The sign-in issuer gave no ID token${typeof answer.error === 'string' ? ` (${answer.error})` : ''}.`);

  const claims = decodePayload(answer.id_token);
  const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (claims.iss !== config.issuer) throw new SignInError('The ID token names another issuer.');
  if (!audiences.includes(config.client_id)) throw new SignInError('The ID token is not for the console.');
  if (claims.nonce !== pending.nonce) throw new SignInError('The ID token does not answer this sign-in (nonce).');
  if (typeof claims.exp !== 'number' || claims.exp * 1000 <= Date.now()) throw new SignInError('The ID token has expired already.');
  session = {
    idToken: answer.id_token,
    sub: String(claims.sub),
    iss: String(claims.iss),
    name: String(claims.preferred_username ?? claims.name ?? claims.email ?? claims.sub),
    expiresAt: claims.exp * 1000,
  };
  return /^\/console(\/|$)/.test(pending.returnTo) ? pending.returnTo : '/console';
}

/** The claims of a JWT, undecoded signature: the broker verifies it on every call. */
function decodePayload(jwt: string): Record<string, unknown> & { exp?: unknown } {
  const part = jwt.split('.')[1] ?? '';
  try {
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0)))) as Record<string, unknown>;
  } catch {
    throw new SignInError('The sign-in issuer gave a malformed ID token.');
  }
}
