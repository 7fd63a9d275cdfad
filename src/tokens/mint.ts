import { createHash, sign } from 'node:crypto';
import type { ActClaim } from '../shared/act.js';
import type { AuthorizationDetail } from '../shared/authorization-details.js';
import { uuidv7 } from '../shared/ids.js';
import { InvalidRequest } from '../shared/errors.js';
import type { Principal } from '../store/index.js';
import type { Keyring, SigningKey } from './keyring.js';

/**
 * The largest token the broker mints, and so the largest it reads back as its own (introspection,
 * revocation, a child's subject_token): a token it minted is never too large for it to revoke.
 * Ordinary requests stay far below it (authorization_details are at most 8 KiB); one that would
 * not fit (every claim at its own bound at once) is refused (400) when it would be minted.
 */
export const MAX_ACCESS_TOKEN_BYTES = 32 * 1024;

/** CONTRACT section 3: the claims of a broker access token besides iss, iat, nbf, exp and jti. */
export interface AccessTokenGrant {
  sub: string;
  aud: string;
  /** The requester's configured issuer name (`client_id` and `idp`). */
  idp: string;
  scopes: readonly string[];
  taskId: string;
  requestId: string;
  approvers: readonly (Principal & { at: string })[];
  breakGlass: boolean;
  ttlSeconds: number;
  /** The latest its `exp` may be, in ms: a child's parent's `exp` (CONTRACT section 1, "Agents"). */
  notAfter?: number | undefined;
  /** RFC 9396 section 9.1: the objects the token acts on. */
  authorizationDetails?: readonly AuthorizationDetail[] | null | undefined;
  /** RFC 8693 section 4.1: the current actor, earlier actors nested under its `act`. */
  act?: ActClaim | undefined;
  /** RFC 9449 section 6.1: the thumbprint of the DPoP key the token is bound to. */
  cnf?: { jkt: string } | undefined;
}

export interface MintedToken {
  token: string;
  jti: string;
  kid: string;
  /** SHA-256 of the token, hex: what the store keeps instead of the token. */
  sha256: string;
  /** When it was minted, in ms (its `iat` is this, floored to the second). */
  issuedAt: number;
  /** Its `exp`, in ms. */
  expiresAt: number;
  ttlSeconds: number;
}

export interface MintOptions {
  /**
   * CONTRACT section 3: `nbf` lies this far before `iat`, so a resource server whose clock lags
   * a little behind the broker's accepts a token the moment it is handed out.
   */
  clockSkewMs: number;
}

/** Signs an RFC 9068 access token. The caller records it before handing it out. */
export async function mintAccessToken(
  keyring: Pick<Keyring, 'signingKey'>,
  issuer: string,
  grant: AccessTokenGrant,
  now: number,
  options: MintOptions,
): Promise<MintedToken> {
  const key = await keyring.signingKey();
  const iat = Math.floor(now / 1000);
  const nbf = Math.max(0, iat - Math.ceil(options.clockSkewMs / 1000));
  // Capped here, where `exp` is set: a lifetime counted from an earlier clock read could end later.
  const exp = Math.min(iat + grant.ttlSeconds, grant.notAfter === undefined ? Number.POSITIVE_INFINITY : Math.floor(grant.notAfter / 1000));
  const jti = uuidv7(now);
  const claims = {
    iss: issuer,
    sub: grant.sub,
    aud: grant.aud,
    iat,
    nbf,
    exp,
    jti,
    client_id: grant.idp,
    scope: grant.scopes.join(' '),
    task_id: grant.taskId,
    request_id: grant.requestId,
    idp: grant.idp,
    ...(grant.approvers.length > 0 ? { approvers: grant.approvers.map(({ iss, sub, at }) => ({ iss, sub, at })) } : {}),
    ...(grant.breakGlass ? { break_glass: true } : {}),
    ...(grant.authorizationDetails ? { authorization_details: grant.authorizationDetails } : {}),
    ...(grant.act ? { act: grant.act } : {}),
    ...(grant.cnf ? { cnf: { jkt: grant.cnf.jkt } } : {}),
  };
  const token = signCompactJws({ alg: key.alg, kid: key.kid, typ: 'at+jwt' }, claims, key);
  if (token.length > MAX_ACCESS_TOKEN_BYTES) throw new InvalidRequest(`The token would be ${token.length} bytes, more than the ${MAX_ACCESS_TOKEN_BYTES} a broker token may be.`);
  return { token, jti, kid: key.kid, sha256: sha256Token(token), issuedAt: now, expiresAt: exp * 1000, ttlSeconds: exp - iat };
}

/**
 * A compact JWS (RFC 7515) signed by node:crypto synchronously: on the issuance path, WebCrypto's
 * asynchronous signing (what jose uses) costs a thread-pool round trip per token. ES256
 * signatures are r || s (IEEE P1363), as JWS requires, not DER.
 */
export function signCompactJws(header: { alg: string; kid: string; typ: string }, payload: object, key: Pick<SigningKey, 'alg' | 'privateKey'>): string {
  const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
  const signature =
    key.alg === 'EdDSA'
      ? sign(null, Buffer.from(input), key.privateKey)
      : sign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' });
  return `${input}.${signature.toString('base64url')}`;
}

export const sha256Token = (token: string): string => createHash('sha256').update(token).digest('hex');
