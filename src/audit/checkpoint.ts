import { importJWK, jwtVerify, SignJWT, type JWTHeaderParameters } from 'jose';
import { SIGNING_ALGORITHMS } from '../config/schema.js';
import { toIso } from '../shared/clock.js';
import type { AuditEventRecord, SigningKeyRecord } from '../store/index.js';
import type { Keyring } from '../tokens/index.js';
import { GENESIS_HASH, type ChainLink } from '../shared/chain-hash.js';
import { BrokerError } from '../shared/errors.js';
import { verifyStoredChain, type ChainVerdict } from './chain.js';

/** The JWS header `typ` of a checkpoint (CONTRACT section 4): never mistaken for an access token. */
export const CHECKPOINT_TYPE = 'checkpoint+jwt';
/** A checkpoint is a few hundred characters; anything much longer is not one. */
export const MAX_CHECKPOINT_LENGTH = 4_096;

/** A chain head: the event at `seq` has hash `hash` (seq 0: the empty chain). */
export interface ChainHead {
  seq: number;
  hash: string;
}

/** `GET /v1/audit/checkpoint`: the head, when it was signed, and the JWS that says so. */
export interface Checkpoint extends ChainHead {
  at: string;
  checkpoint: string;
}

/**
 * Signs the chain head with the broker's current signing key: claims `iss`, `seq`, `hash` and
 * `iat`, header `typ: checkpoint+jwt` and the key's `kid`, so anyone can verify it against the
 * JWKS and keep it away from the broker's host. Kept there, it proves how long the chain was:
 * whoever later deletes the newest events cannot make the chain hold this head again.
 */
export async function signCheckpoint(keyring: Pick<Keyring, 'signingKey'>, issuer: string, head: ChainHead, now: number): Promise<Checkpoint> {
  const key = await keyring.signingKey();
  const iat = Math.floor(now / 1000);
  const checkpoint = await new SignJWT({ seq: head.seq, hash: head.hash })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: CHECKPOINT_TYPE })
    .setIssuer(issuer)
    .setIssuedAt(iat)
    .sign(key.privateKey);
  return { seq: head.seq, hash: head.hash, at: toIso(iat * 1000), checkpoint };
}

/**
 * Where the keys that may have signed a checkpoint are looked up by `kid`: the broker's store
 * (online), a database file's signing_keys, or a JWKS the auditor trusts (offline).
 */
export interface CheckpointKeys {
  get(kid: string): Promise<Pick<SigningKeyRecord, 'kid' | 'alg' | 'publicJwk'> | undefined>;
}

/**
 * Whose keys vouched for a checkpoint: a JWKS the auditor trusts (`jwks`), the broker's own keys
 * as the broker read them from its store (`broker`), or only the keys in the database file being
 * checked (`file`), which whoever rewrote the file could have rewritten too.
 */
export type CheckpointTrust = 'jwks' | 'broker' | 'file';

/** The head of an empty chain. */
export const EMPTY_HEAD: ChainHead = { seq: 0, hash: GENESIS_HASH };

/**
 * The head a checkpoint attests, when it is a `checkpoint+jwt` of this broker whose signature
 * verifies against one of the broker's keys, retired ones included (a checkpoint is kept for
 * years; its key leaves the JWKS within a day); undefined for anything else.
 */
export async function readCheckpoint(
  jws: string,
  options: {
    /** The broker's `iss`; offline, where no configuration says it, the signing key alone counts. */
    issuer?: string;
    keys: CheckpointKeys;
  },
): Promise<(ChainHead & { kid: string }) | undefined> {
  if (jws.length === 0 || jws.length > MAX_CHECKPOINT_LENGTH) return undefined;
  let kid = '';
  const key = async (header: JWTHeaderParameters) => {
    const record = header.kid === undefined ? undefined : await options.keys.get(header.kid);
    if (!record || record.alg !== header.alg) throw new Error('no such key');
    kid = record.kid;
    return importJWK(record.publicJwk, record.alg);
  };
  try {
    const { payload } = await jwtVerify(jws, key, {
      ...(options.issuer !== undefined ? { issuer: options.issuer } : {}),
      typ: CHECKPOINT_TYPE,
      algorithms: [...SIGNING_ALGORITHMS],
      requiredClaims: ['seq', 'hash', 'iat'],
    });
    const { seq, hash } = payload as { seq: unknown; hash: unknown };
    if (!Number.isSafeInteger(seq) || (seq as number) < 0 || typeof hash !== 'string' || !/^[0-9a-f]{64}$/.test(hash)) return undefined;
    return { seq: seq as number, hash, kid };
  } catch (error) {
    // Keys the store cannot give right now (503) say nothing of the checkpoint: never call it forged.
    if (error instanceof BrokerError) throw error;
    return undefined;
  }
}

/**
 * The JWS in what an auditor kept: the JWS itself, or the JSON it came in (the answer of
 * `GET /v1/audit/checkpoint`, an `audit.checkpoint` webhook body or the event's `data`).
 */
export function checkpointFromText(text: string): string | undefined {
  const trimmed = text.trim();
  if (!trimmed.startsWith('{')) return trimmed || undefined;
  try {
    const { checkpoint } = JSON.parse(trimmed) as { checkpoint?: unknown };
    return typeof checkpoint === 'string' ? checkpoint : undefined;
  } catch {
    return undefined;
  }
}

export type CheckpointVerdict = ChainVerdict | { ok: false; reason: 'truncated' };

/**
 * Verifies the stored chain and, given a checkpoint's head, that the chain still holds that
 * event with that hash. A chain whose newest events were deleted still links up perfectly; only
 * a head remembered outside the database shows that it is shorter than it was (`truncated`).
 */
export async function verifyChainHolds(
  events: { links(afterSeq: number, limit: number): Promise<ChainLink[]>; at(seq: number): Promise<AuditEventRecord | undefined> },
  head?: ChainHead,
  /** The chain's verdict, when it was walked already. */
  walked?: ChainVerdict,
): Promise<CheckpointVerdict> {
  let verdict = walked ?? (await verifyStoredChain(events));
  if (!verdict.ok || head === undefined) return verdict;
  // A walk shared with earlier callers may have read the chain before the checkpoint's event
  // committed (on PostgreSQL a page is read while other replicas append); that event was
  // committed before the checkpoint was signed, so a head past the walk's end is read on to.
  if (head.seq > verdict.events) verdict = await verifyStoredChain(events, undefined, verdict);
  if (!verdict.ok) return verdict;
  if (head.seq === 0) return head.hash === GENESIS_HASH ? verdict : { ok: false, reason: 'truncated' };
  const event = head.seq <= verdict.events ? await events.at(head.seq) : undefined;
  return event?.hash === head.hash ? verdict : { ok: false, reason: 'truncated' };
}

/** The verdict as the API and the CLI show it. */
export const verdictView = (verdict: CheckpointVerdict) =>
  verdict.ok
    ? { ok: true as const, events: verdict.events, head: verdict.head }
    : 'reason' in verdict
      ? { ok: false as const, reason: verdict.reason }
      : { ok: false as const, first_bad_seq: verdict.firstBadSeq };
export type VerdictView = ReturnType<typeof verdictView>;
