import { decodeJwt } from 'jose';
import { describe, expect, it } from 'vitest';
import { loadConfig, type IssuerConfig } from '../../src/config/index.js';
import { compileRoles, createIdentityVerifier, createPeople, loadTrustedIssuers, mintDevIdentityToken } from '../../src/identity/index.js';
import { tempDir } from '../helpers/temp.js';

/** The development issuers of the shipped config: their tokens must pass the checks real ones do. */

describe('dev identity tokens', () => {
  const { config: shipped } = loadConfig('config/broker.yaml');
  const keyDir = tempDir('jit-dev-issuer-test-');
  const config = {
    ...shipped,
    identity: { issuers: shipped.identity.issuers.map((issuer) => ({ ...issuer, dev: { keyDir } })) },
  };
  const issuer = (name: string) => config.identity.issuers.find((candidate) => candidate.name === name) as IssuerConfig;

  it('carry the name claim their issuer requires, by default the subject, so the README walks are accepted', async () => {
    const verifier = createIdentityVerifier({
      issuers: await loadTrustedIssuers(config.identity.issuers),
      roles: compileRoles(config.roles),
      people: createPeople(config),
      clockSkewMs: config.clockSkew,
      clock: Date.now,
    });
    const job = await mintDevIdentityToken(issuer('dev-ci'), { subject: 'repo:acme/app:ref:refs/heads/main' });
    expect(decodeJwt(job).actor).toBe('repo:acme/app:ref:refs/heads/main');
    expect(await verifier.verify(job)).toMatchObject({ idp: 'dev-ci', initiator: 'repo:acme/app:ref:refs/heads/main' });
    const olga = await mintDevIdentityToken(issuer('dev-sso'), { subject: 'olga', claims: { groups: 'on-call' } });
    expect(await verifier.verify(olga)).toMatchObject({ idp: 'dev-sso', username: 'olga', person: 'u:olga' });
  });

  it('take the name claim given instead', async () => {
    const job = await mintDevIdentityToken(issuer('dev-ci'), { subject: 'repo:acme/ml:ref:refs/heads/main', claims: { actor: 'bob' } });
    expect(decodeJwt(job).actor).toBe('bob');
  });
});
