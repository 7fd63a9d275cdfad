import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import type { JWK } from 'jose';
import type { DpopSigningKey } from '../dpop/index.js';
import { readPrivateJwk, writePrivateJwk } from '../shared/key-files.js';
import type { BrokerClient } from './client.js';
import type { CliIo } from './cli-io.js';
import { dpopKeyFile, privateConfigDir } from './config-dir.js';
import { CliError, shown } from './io.js';

/**
 * DPoP (RFC 9449) for the commands that get a token: the CLI holds one key pair of its own and
 * sends a fresh proof by it with each call that issues a token, so the broker binds the token to
 * that key (`cnf.jkt`). A copy of such a token (from a CI log, an agent's context, a crash dump)
 * is useless without the private key, which never leaves its file and is never printed.
 */

/** The option `jit request` and `jit collect` take. */
export const dpopOptions = { dpop: { type: 'boolean', default: false } } as const;

export const DPOP_HELP = `  --dpop                   bind the token to this CLI's DPoP key (RFC 9449): a copy of it is
                           useless without the key (<config dir>/dpop.jwk.json, made once)`;

/**
 * The client as it is, or, with `--dpop`, one that sends a fresh proof (new `jti`, `iat` now,
 * `htm` POST, `htu` the broker URL and the path) with every POST: the calls that issue a token.
 * Reads go without one: they bind nothing.
 */
export function withDpop(client: BrokerClient, io: CliIo, wanted: boolean): BrokerClient {
  if (!wanted) return client;
  const key = dpopKey(io.env);
  // Imported when a proof is signed: without --dpop, `jit request` loads no JOSE library.
  const proofFor = async (url: string) => (await import('../dpop/index.js')).signDpopProof(key, { method: 'POST', url });
  return {
    ...client,
    async post<T>(path: string, body?: unknown, headers: Record<string, string> = {}) {
      const proof = await proofFor(`${client.base}${path}`);
      const answer = await client.post<T>(path, body, { ...headers, dpop: proof });
      warnIfUnbound(io, answer.body);
      return answer;
    },
    async exchange<T>(fields: Record<string, string>, headers: Record<string, string> = {}) {
      const proof = await proofFor(`${client.base}/oauth2/token`);
      const answer = await client.exchange<T>(fields, { ...headers, dpop: proof });
      warnIfUnbound(io, answer.body);
      return answer;
    },
  };
}

/** A broker that does not know DPoP ignores the proof: say so rather than hand out an unbound token quietly. */
function warnIfUnbound(io: CliIo, body: unknown): void {
  if (typeof body !== 'object' || body === null || !('access_token' in body)) return;
  const tokenType = (body as { token_type?: unknown }).token_type;
  if (tokenType !== 'DPoP') {
    io.stderr(`warning: the broker did not bind the token to the DPoP key (token_type ${shown(String(tokenType))}): a copy of it works without the key\n`);
  }
}

/**
 * The CLI's DPoP key: read from its file, or made (ES256) and written there once, mode 0600 in a
 * 0700 directory. A file others can read is refused, as ssh refuses such a key.
 */
function dpopKey(env: NodeJS.ProcessEnv): DpopSigningKey {
  const path = dpopKeyFile(env);
  let jwk: JWK;
  try {
    jwk = readOrCreate(path, env);
  } catch (error) {
    if (error instanceof CliError) throw error;
    // JSON.parse quotes the text it failed on: the message would show the key.
    if (error instanceof SyntaxError) throw new CliError(`${path} is not a JWK (JSON); move it away and a new key is made`);
    const code = (error as NodeJS.ErrnoException).code;
    throw new CliError(code ? `cannot use the DPoP key ${path} (${code})` : `cannot use the DPoP key: ${(error as Error).message}`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: jwk, format: 'jwk' });
  } catch {
    throw new CliError(`${path} is not a private key (a JWK); move it away and a new key is made`);
  }
  const publicJwk = createPublicKey(privateKey).export({ format: 'jwk' }) as JWK;
  const alg = publicJwk.kty === 'EC' && publicJwk.crv === 'P-256' ? 'ES256' : publicJwk.kty === 'OKP' && publicJwk.crv === 'Ed25519' ? 'EdDSA' : undefined;
  if (alg === undefined) throw new CliError(`${path} holds neither a P-256 nor an Ed25519 key; move it away and a new key is made`);
  return { alg, privateKey, publicJwk };
}

function readOrCreate(path: string, env: NodeJS.ProcessEnv): JWK {
  try {
    return readPrivateJwk(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  privateConfigDir(env);
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  try {
    writePrivateJwk(path, privateKey.export({ format: 'jwk' }) as JWK);
  } catch (error) {
    // Another jit made it a moment ago (the write never replaces a file): use that one.
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  return readPrivateJwk(path);
}
