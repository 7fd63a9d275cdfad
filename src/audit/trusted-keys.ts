import type { JWK } from 'jose';
import { SIGNING_ALGORITHMS } from '../config/schema.js';
import { JWKS_MAX_KEYS } from '../identity/index.js';
import { publicJwk } from '../shared/key-files.js';
import type { CheckpointKeys } from './checkpoint.js';

/**
 * Keys an auditor trusts to have signed checkpoints, from outside the evidence: the broker's
 * `/.well-known/jwks.json` kept when the checkpoint was. Whoever can rewrite a database can put
 * a key of their own in its signing_keys and sign any head with it; they cannot put it in a file
 * kept elsewhere.
 */
export interface TrustedKeys {
  keys: CheckpointKeys;
  /** Where they came from (a file, a URL), for messages. */
  name: string;
}

/** Text that cannot serve as trusted keys: not JSON, not a JWKS, or no key a checkpoint could name. */
export class NotAJwks extends Error {
  override readonly name = 'NotAJwks';
}

/**
 * The keys of a JWKS, by `kid`. A key counts when it names its `kid` and an `alg` the broker
 * signs with (the broker's JWKS always does), and is not marked for encryption; anything private
 * a file may hold is dropped, as only the public half verifies.
 */
export function trustedKeysFromJwks(text: string, name: string): TrustedKeys {
  let jwks: unknown;
  try {
    jwks = JSON.parse(text);
  } catch {
    throw new NotAJwks(`${name} is not a JWKS (not JSON)`);
  }
  const listed = typeof jwks === 'object' && jwks !== null ? (jwks as { keys?: unknown }).keys : undefined;
  if (!Array.isArray(listed)) throw new NotAJwks(`${name} is not a JWKS (a JSON object with a "keys" array)`);
  if (listed.length > JWKS_MAX_KEYS) throw new NotAJwks(`${name} holds ${listed.length} keys, more than ${JWKS_MAX_KEYS}`);
  const keys = new Map<string, { kid: string; alg: string; publicJwk: JWK }>();
  for (const key of listed as unknown[]) {
    if (typeof key !== 'object' || key === null) continue;
    const { kid, alg, use } = key as JWK;
    if (typeof kid !== 'string' || !(SIGNING_ALGORITHMS as readonly unknown[]).includes(alg) || (use !== undefined && use !== 'sig')) continue;
    // Two keys under one kid: which one a checkpoint names cannot be told.
    if (keys.has(kid)) throw new NotAJwks(`${name} holds two keys with kid ${kid}`);
    keys.set(kid, { kid, alg: alg as string, publicJwk: publicJwk(key as JWK) });
  }
  if (keys.size === 0) throw new NotAJwks(`${name} holds no signing key with a kid and an alg of ${SIGNING_ALGORITHMS.join(', ')}`);
  return { keys: { get: async (kid) => keys.get(kid) }, name };
}
