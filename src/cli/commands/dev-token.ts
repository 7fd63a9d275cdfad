import { resolve } from 'node:path';
import { decodeJwt } from 'jose';
import { loadConfig, resolveConfigPath } from '../../config/index.js';
import { devKeyExists, mintDevIdentityToken } from '../../identity/index.js';
import { parseClaims } from '../claims.js';
import type { CliIo } from '../cli-io.js';
import { parseTtlSeconds } from '../duration.js';
import { CliError, EXIT, parse, usage } from '../io.js';
import { printJson } from '../views.js';

export const help = `jit dev-token --sub SUBJECT [--issuer NAME] [--claim name=value ...] [--ttl 10m] [--config FILE] [--json]
  Mints an identity token from a DEVELOPMENT issuer (one with \`dev:\`) of the broker's
  configuration, with the key the broker made at its start: start the broker first.
  --issuer   the dev issuer's name (default: the first dev workload issuer)
  --claim    an extra claim; a value starting with [ or { is read as JSON (groups=["a","b"])
  --ttl      the token's lifetime (default 10m)
  --config   the broker's configuration (default: env BROKER_CONFIG, else config/broker.yaml);
             its relative paths are from the current folder, as for the broker
  --json     {token, iss, sub, expires_at} instead of the token alone`;

export async function devToken(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, {
    sub: { type: 'string' },
    issuer: { type: 'string' },
    claim: { type: 'string', multiple: true, default: [] },
    ttl: { type: 'string', default: '10m' },
    config: { type: 'string' },
    json: { type: 'boolean', default: false },
  });
  if (!values.sub) throw usage('--sub is required');
  const ttlSeconds = parseTtlSeconds(values.ttl);
  const claims = parseClaims(values.claim);

  // The broker's own file, for the development issuer's key.
  const { config } = loadConfig(values.config ?? resolveConfigPath([], io.env), {});
  const devIssuers = config.identity.issuers.filter((issuer) => issuer.dev);
  if (devIssuers.length === 0) {
    throw new CliError('this configuration has no development issuer (`dev:`); dev-token only works with a development config');
  }
  const issuer = values.issuer
    ? devIssuers.find((candidate) => candidate.name === values.issuer)
    : (devIssuers.find((candidate) => candidate.kind === 'workload') ?? devIssuers[0]);
  if (!issuer?.dev) throw usage(`no development issuer is named "${values.issuer}" (have: ${devIssuers.map((i) => i.name).join(', ')})`);
  if (!devKeyExists(issuer.dev.keyDir)) {
    throw new CliError(
      `no development key in ${resolve(issuer.dev.keyDir)}: the broker makes it at its start. Start the broker (npm start) first, and run dev-token from the folder it runs in (the configuration's relative paths are from there)`,
    );
  }
  const token = await mintDevIdentityToken(issuer, { subject: values.sub, claims, ttlSeconds });
  if (values.json) {
    const { iss, sub, exp } = decodeJwt(token);
    printJson(io, { token, iss, sub, expires_at: new Date((exp as number) * 1000).toISOString() });
  } else io.stdout(`${token}\n`);
  return EXIT.ok;
}
