import { readFileSync } from 'node:fs';
import { decodeJwt } from 'jose/jwt/decode';
import { boundedJson } from './answer.js';
import { loginFile, readConfigFile } from './config-dir.js';
import { argumentInMessage, CliError, EXIT, usage } from './errors.js';
import type { CliIo } from './cli-io.js';

/**
 * Where the caller's identity token comes from. A token read or fetched here is never printed,
 * logged or put in a message: messages name the source (`describe`), never its content.
 */
export interface IdentitySource {
  /** The source in words, for messages: "BROKER_IDENTITY_TOKEN", "the file /var/run/...", "GitHub Actions". */
  describe: string;
  /** The token, read or fetched afresh where the source renews it (files, the CI system's endpoint). */
  token(): Promise<string>;
  /** The broker a `jit login` was made at, when the identity is that login. */
  loginBroker?: string;
}

export const DEFAULT_IDENTITY_AUDIENCE = 'jit-broker';
export const DEFAULT_GITLAB_VARIABLE = 'JIT_ID_TOKEN';
export const DEFAULT_KUBERNETES_TOKEN_FILE = '/var/run/secrets/tokens/jit-broker';
export const SPIFFE_SVID_FILE_VARIABLE = 'JIT_SPIFFE_SVID_FILE';

export const IDENTITY_HELP = `Identity (the first that is given):
  --identity-from SOURCE
      github-actions[:AUD]  the job's OIDC token, asked for with audience AUD (default ${DEFAULT_IDENTITY_AUDIENCE});
                            the workflow needs permissions: id-token: write
      gitlab[:VAR]          a GitLab id_tokens variable (default ${DEFAULT_GITLAB_VARIABLE})
      kubernetes[:PATH]     a projected service-account token file
                            (default ${DEFAULT_KUBERNETES_TOKEN_FILE})
      spiffe[:PATH]         a JWT-SVID file (default: the file env ${SPIFFE_SVID_FILE_VARIABLE} names)
      file:PATH             a file holding the token (- for stdin)
      env:VAR               an environment variable holding the token
  --identity-file FILE      a file holding the token (- for stdin)
  env BROKER_IDENTITY_TOKEN
  your jit login (<config dir>/login.json), while it has not expired
  Files are read again on every call, so a token rotated during a long --wait is picked up.
  The config dir is env JIT_CONFIG_DIR, else $XDG_CONFIG_HOME/jit, else ~/.config/jit.`;

export const identityOptions = {
  'identity-from': { type: 'string' },
  'identity-file': { type: 'string' },
} as const;

export interface IdentityValues {
  'identity-from'?: string | undefined;
  'identity-file'?: string | undefined;
}

/** The caller's identity, by the precedence `IDENTITY_HELP` lists. */
export function resolveIdentity(io: CliIo, values: IdentityValues): IdentitySource {
  const from = values['identity-from'];
  const file = values['identity-file'];
  if (from !== undefined && file !== undefined) throw usage('give --identity-from or --identity-file, not both');
  if (from !== undefined) return fromSpec(io, from);
  if (file !== undefined) return fileSource(io, file);
  if (io.env.BROKER_IDENTITY_TOKEN?.trim()) return envSource(io, 'BROKER_IDENTITY_TOKEN');
  const login = loginSource(io);
  if (login) return login;
  throw usage(
    'no identity: pass --identity-from SOURCE (github-actions, gitlab, kubernetes, spiffe, file:PATH, env:VAR) or --identity-file FILE, set BROKER_IDENTITY_TOKEN, or run: jit login',
  );
}

function fromSpec(io: CliIo, spec: string): IdentitySource {
  const colon = spec.indexOf(':');
  const kind = colon < 0 ? spec : spec.slice(0, colon);
  const argument = colon < 0 ? undefined : spec.slice(colon + 1);
  if (argument === '') throw usage(`--identity-from ${spec}: nothing after the colon`);
  switch (kind) {
    case 'github-actions':
      return githubActionsSource(io, argument ?? DEFAULT_IDENTITY_AUDIENCE);
    case 'gitlab': {
      const variable = argument ?? DEFAULT_GITLAB_VARIABLE;
      if (!io.env[variable]?.trim()) {
        const named = argumentInMessage(variable);
        throw usage(`--identity-from gitlab: ${named} is not set; declare it in .gitlab-ci.yml under id_tokens: (${named}: {aud: ${DEFAULT_IDENTITY_AUDIENCE}})`);
      }
      return envSource(io, variable, `${variable} (GitLab id_tokens)`);
    }
    case 'kubernetes':
      return fileSource(io, argument ?? DEFAULT_KUBERNETES_TOKEN_FILE, 'Kubernetes service-account token', {
        missing: 'mount a projected service-account token there, or name its file: --identity-from kubernetes:PATH',
      });
    case 'spiffe': {
      const path = argument ?? io.env[SPIFFE_SVID_FILE_VARIABLE];
      if (!path) throw usage(`--identity-from spiffe: name the JWT-SVID file (spiffe:PATH) or set ${SPIFFE_SVID_FILE_VARIABLE}`);
      return fileSource(io, path, 'JWT-SVID', { check: spiffeSubject });
    }
    case 'file':
      if (argument === undefined) throw usage('--identity-from file:PATH needs the path');
      return fileSource(io, argument);
    case 'env':
      if (argument === undefined) throw usage('--identity-from env:VAR needs the variable name');
      if (!io.env[argument]?.trim()) throw usage(`--identity-from env:${argumentInMessage(argument)}: ${argumentInMessage(argument)} is not set`);
      return envSource(io, argument);
    default:
      throw usage(`--identity-from ${argumentInMessage(kind)}: unknown source; use github-actions, gitlab, kubernetes, spiffe, file:PATH or env:VAR`);
  }
}

function envSource(io: CliIo, variable: string, describe = variable): IdentitySource {
  return { describe, token: async () => jwt(io.env[variable] ?? '', describe) };
}

function fileSource(
  io: CliIo,
  path: string,
  what?: string,
  options: { missing?: string; check?: (token: string, describe: string) => void } = {},
): IdentitySource {
  const describe = path === '-' ? 'stdin' : `the file ${argumentInMessage(path)}${what ? ` (${what})` : ''}`;
  let stdin: string | undefined;
  return {
    describe,
    async token() {
      const token = jwt(path === '-' ? (stdin ??= io.readStdin()) : readIdentityFile(path, describe, options.missing), describe);
      options.check?.(token, describe);
      return token;
    },
  };
}

function readIdentityFile(path: string, describe: string, missing?: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    throw usage(`cannot read ${describe} (${code})${missing && code === 'ENOENT' ? `: ${missing}` : ''}`);
  }
}

/** The token as text, checked to be a JWT's shape so that a wrong file fails here, not as a 401. */
function jwt(text: string, describe: string): string {
  const token = text.trim();
  if (!token) throw usage(`the identity token from ${describe} is empty`);
  if (!/^[\w-]+\.[\w-]+\.[\w-]*$/.test(token)) throw usage(`the identity token from ${describe} is not a JWT`);
  return token;
}

function spiffeSubject(token: string, describe: string): void {
  const sub = claims(token)?.sub;
  if (typeof sub !== 'string' || !sub.startsWith('spiffe://')) throw usage(`the identity token from ${describe} is not a JWT-SVID: its sub is not a SPIFFE ID`);
}

/**
 * GitHub Actions hands a job a URL and a bearer token with which it may ask for OIDC tokens
 * (when the workflow grants `id-token: write`). Each call asks with the broker's audience; a
 * token is reused until a minute before it expires.
 */
function githubActionsSource(io: CliIo, audience: string): IdentitySource {
  const describe = 'GitHub Actions';
  const requestUrl = io.env.ACTIONS_ID_TOKEN_REQUEST_URL;
  const requestToken = io.env.ACTIONS_ID_TOKEN_REQUEST_TOKEN;
  if (!requestUrl || !requestToken) {
    throw usage(
      '--identity-from github-actions: ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set; run in a GitHub Actions job with permissions: id-token: write',
    );
  }
  let url: URL;
  try {
    url = new URL(requestUrl);
  } catch {
    throw usage('ACTIONS_ID_TOKEN_REQUEST_URL is not a URL');
  }
  url.searchParams.set('audience', audience);
  let cached: { token: string; exp: number } | undefined;
  return {
    describe,
    async token() {
      if (cached && cached.exp * 1000 > Date.now() + 60_000) return cached.token;
      let response: Response;
      try {
        response = await io.fetch(url, {
          headers: { authorization: `Bearer ${requestToken}`, accept: 'application/json' },
          signal: AbortSignal.timeout(30_000),
        });
      } catch {
        throw new CliError('cannot reach the GitHub Actions token endpoint (ACTIONS_ID_TOKEN_REQUEST_URL)', EXIT.unreachable);
      }
      if (response.status !== 200) {
        throw new CliError(`the GitHub Actions token endpoint answered HTTP ${response.status}`, response.status >= 500 ? EXIT.unreachable : EXIT.failed);
      }
      let value: unknown;
      try {
        value = ((await boundedJson(response)) as { value?: unknown }).value;
      } catch {
        value = undefined;
      }
      if (typeof value !== 'string') throw new CliError('the GitHub Actions token endpoint answered without a token');
      const token = jwt(value, describe);
      cached = { token, exp: Number(claims(token)?.exp ?? 0) };
      return token;
    },
  };
}

interface Login {
  broker: string;
  issuer: string;
  id_token: string;
  expires_at: string;
}

/** `jit login`'s file, while it has not expired; an expired one is an expired identity. */
function loginSource(io: CliIo): IdentitySource | undefined {
  const path = loginFile(io.env);
  let text: string | undefined;
  try {
    text = readConfigFile(path, { secret: true });
  } catch (error) {
    if (error instanceof CliError) throw error;
    throw usage(`cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (text === undefined) return undefined;
  let login: Partial<Login> | undefined;
  try {
    login = JSON.parse(text) as Partial<Login>;
  } catch {
    login = undefined;
  }
  const expiresAt = typeof login?.expires_at === 'string' ? Date.parse(login.expires_at) : Number.NaN;
  if (!login || typeof login.id_token !== 'string' || typeof login.broker !== 'string' || Number.isNaN(expiresAt)) {
    throw usage(`${path} is not a jit login file; run: jit login`);
  }
  const describe = `your login (${path})`;
  if (expiresAt <= Date.now()) throw new CliError(`${describe} expired at ${new Date(expiresAt).toISOString()}; run: jit login`, EXIT.identityExpired);
  const token = login.id_token;
  return { describe, token: async () => jwt(token, describe), loginBroker: login.broker };
}

/** A JWT's claims, read without verifying (the CLI only looks at `exp`, `sub`, `request_id`). */
export function claims(token: string): Record<string, unknown> | undefined {
  try {
    return decodeJwt(token);
  } catch {
    return undefined;
  }
}
