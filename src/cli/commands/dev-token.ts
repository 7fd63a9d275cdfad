import ms from 'ms';
import { mintDevIdentityToken } from '../../identity/index.js';
import { CliError, parse, readConfig, usage, type CliIo } from '../io.js';

export const help = `jit dev-token --sub SUBJECT [--issuer NAME] [--claim name=value ...] [--ttl 10m] [--config FILE]
  Mints an identity token from a DEVELOPMENT issuer of the configuration (one with \`dev:\`).
  --issuer   the dev issuer's name (default: the first dev workload issuer)
  --claim    an extra claim; a value starting with [ or { is read as JSON (groups=["a","b"])`;

export async function devToken(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, {
    sub: { type: 'string' },
    issuer: { type: 'string' },
    claim: { type: 'string', multiple: true, default: [] },
    ttl: { type: 'string', default: '10m' },
    config: { type: 'string' },
  });
  if (!values.sub) throw usage('--sub is required');
  const config = readConfig(io, values.config);
  const devIssuers = config.identity.issuers.filter((issuer) => issuer.dev);
  if (devIssuers.length === 0) {
    throw new CliError('this configuration has no development issuer (`dev:`); dev-token only works with a development config');
  }
  const issuer = values.issuer
    ? devIssuers.find((candidate) => candidate.name === values.issuer)
    : (devIssuers.find((candidate) => candidate.kind === 'workload') ?? devIssuers[0]);
  if (!issuer) throw usage(`no development issuer is named "${values.issuer}" (have: ${devIssuers.map((i) => i.name).join(', ')})`);
  const ttl = ms(values.ttl as ms.StringValue);
  if (!Number.isFinite(ttl) || ttl < 1000) throw usage(`--ttl ${values.ttl} is not a duration such as 10m`);

  const claims: Record<string, unknown> = {};
  for (const pair of values.claim) {
    const at = pair.indexOf('=');
    if (at < 1) throw usage(`--claim ${pair}: expected name=value`);
    const value = pair.slice(at + 1);
    try {
      claims[pair.slice(0, at)] = /^[[{]/.test(value) ? JSON.parse(value) : value;
    } catch {
      throw usage(`--claim ${pair}: the value is not valid JSON`);
    }
  }
  io.stdout(`${await mintDevIdentityToken(issuer, { subject: values.sub, claims, ttlSeconds: Math.floor(ttl / 1000) })}\n`);
  return 0;
}
