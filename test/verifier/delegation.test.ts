import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actorChain, BrokerTokenError, createBrokerVerifier, type VerifyRequirements } from '../../src/verifier/index.js';
import { AUDIENCE, startTokenMint, type TokenMint } from '../helpers/minted.js';

/**
 * Delegated tokens (RFC 8693 `act`, CONTRACT section 1 "Agents"): the verifier reads the chain of
 * actors, current first, and a resource server may require delegation, forbid it, or take either.
 */

const AGENTS = 'https://agents.acme.org';
const RELEASE_AGENT = { iss: AGENTS, sub: 'spiffe://acme.org/agent/release-1' };
const SUB_AGENT = { iss: AGENTS, sub: 'spiffe://acme.org/agent/checker' };

let tokens: TokenMint;
beforeAll(async () => {
  tokens = await startTokenMint();
});
afterAll(async () => {
  await tokens.close();
});

const verifier = () => createBrokerVerifier({ issuer: tokens.issuer, audience: AUDIENCE, jwksUri: tokens.jwksUri });
const plain = () => tokens.mint();
/** The release agent acted for bob; the checker, a sub-agent, acts now for the release agent's grant. */
const delegated = () => tokens.mint({ sub: 'bob', act: { ...SUB_AGENT, act: RELEASE_AGENT } });

const outcome = (token: string, requirements: VerifyRequirements) =>
  verifier()
    .verify(token, requirements)
    .then(
      () => 'accepted',
      (error: unknown) => (error instanceof BrokerTokenError ? `${error.code}: ${error.message}` : `unexpected ${String(error)}`),
    );

describe('the actor chain of a token', () => {
  it('lists the actors, the current one (outermost act) first, from verified claims', async () => {
    const claims = await verifier().verify(await delegated());
    expect(actorChain(claims)).toEqual([SUB_AGENT, RELEASE_AGENT]);
    expect(claims.sub).toBe('bob');
  });

  it('is empty for a token nobody acts in', async () => {
    expect(actorChain(await verifier().verify(await plain()))).toEqual([]);
  });

  it('refuses a malformed act as invalid rather than guess', () => {
    for (const act of ['bob', null, [], { sub: 'x' }, { iss: 'i', sub: 'x', act: { iss: 'i' } }, { iss: 1, sub: 'x' }]) {
      expect(() => actorChain({ act }), JSON.stringify(act)).toThrow(expect.objectContaining({ code: 'invalid' }));
    }
    let deep: Record<string, unknown> = { iss: 'i', sub: 'a0' };
    for (let i = 1; i <= 40; i += 1) deep = { iss: 'i', sub: `a${i}`, act: deep };
    expect(() => actorChain({ act: deep })).toThrow(/more than 32 actors/);
  });
});

describe('a resource server\'s delegation requirement', () => {
  it('by default takes delegated and direct tokens alike', async () => {
    expect(await outcome(await plain(), {})).toBe('accepted');
    expect(await outcome(await delegated(), {})).toBe('accepted');
    expect(await outcome(await delegated(), { delegation: 'allowed' })).toBe('accepted');
  });

  it('required: only tokens an actor holds for a principal', async () => {
    expect(await outcome(await delegated(), { delegation: 'required' })).toBe('accepted');
    expect(await outcome(await plain(), { delegation: 'required' })).toBe(
      'delegation: this resource server takes delegated tokens only (an agent acting for a principal, act); this one is not',
    );
  });

  it('forbidden: only tokens their subject holds itself', async () => {
    expect(await outcome(await plain(), { delegation: 'forbidden' })).toBe('accepted');
    expect(await outcome(await delegated(), { delegation: 'forbidden' })).toBe(
      'delegation: this resource server refuses delegated tokens; this one is held by an actor (act) for its subject',
    );
  });
});
