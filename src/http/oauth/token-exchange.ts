import type { CredentialService, PresentedProof, RequestOutcome } from '../../credentials/index.js';
import type { Identity } from '../../identity/index.js';
import type { AuthorizationDetail } from '../../shared/authorization-details.js';
import { InvalidAuthorizationDetails, InvalidRequest, InvalidTarget, InvalidToken } from '../../shared/errors.js';
import type { Authenticator } from '../auth.js';
import { ACCESS_TOKEN_TYPE, authorizationDetails, credentialRequestBody, tokenExchangeForm } from '../schemas.js';
import { parseInput } from '../validation.js';

export const grantType = 'urn:ietf:params:oauth:grant-type:token-exchange';

type Granted = {
  access_token: string;
  issued_token_type: string;
  token_type: 'Bearer' | 'DPoP';
  expires_in: number;
  scope: string;
  request_id: string;
  authorization_details?: AuthorizationDetail[];
};

/** What the token endpoint answers: a token (200), or "not yet" for a request awaiting approval (400). */
export type ExchangeResult =
  | { status: 200; body: Granted }
  | { status: 400; body: { error: 'authorization_pending'; error_description: string; request_id: string } };

/**
 * RFC 8693 token exchange. The subject token is the caller's identity, or the principal's when an
 * agent presents its own identity as `actor_token`; a broker token as subject token
 * (`subject_token_type` access_token) is exchanged for a narrower child. The broker's extension
 * parameters say what it is for; with `request_id`, the exchange collects the token of a request
 * that has since been approved.
 */
export async function exchange(
  form: unknown,
  deps: { auth: Authenticator; credentials: CredentialService },
  /** Told who the caller is once a token is verified (for the request log). */
  verified: (identity: Identity) => void = () => {},
  /** A DPoP proof the request carried: the token is bound to its key (RFC 9449). */
  proof?: PresentedProof,
): Promise<ExchangeResult> {
  const params = parseInput(tokenExchangeForm, { ...(form as Record<string, unknown>), ...target(form) }, 'body');
  // Read once the tokens that say who asks are verified, as /v1 reads a body only for a known
  // caller (and as `jit policy test` judges a case): a bad token is the answer, whatever else is wrong.
  const details = () => (params.authorization_details === undefined ? undefined : parseDetails(params.authorization_details));
  if ((params.actor_token === undefined) !== (params.actor_token_type === undefined)) {
    throw new InvalidRequest('actor_token and actor_token_type go together (RFC 8693 section 2.1).');
  }
  const actor = params.actor_token === undefined ? undefined : await presented(deps.auth, params.actor_token, 'actor_token');
  if (actor) verified(actor);

  if (params.subject_token_type === ACCESS_TOKEN_TYPE) {
    if (params.request_id !== undefined) throw new InvalidRequest('A child token is issued at once: there is no request_id to collect with a broker token.');
    const child = parseInput(credentialRequestBody.partial(), {
      ...(params.task_id !== undefined ? { task_id: params.task_id } : {}),
      ...(params.scope !== undefined ? { scopes: params.scope.split(' ').filter(Boolean) } : {}),
      ...(params.audience !== undefined ? { audience: params.audience } : {}),
      ...(params.ttl_seconds !== undefined ? { ttl_seconds: params.ttl_seconds } : {}),
      ...(params.justification !== undefined ? { justification: params.justification } : {}),
      ...(params.break_glass !== undefined ? { break_glass: params.break_glass === 'true' } : {}),
    }, 'body');
    const outcome = await deps.credentials.child(params.subject_token, actor, {
      taskId: child.task_id,
      scopes: child.scopes,
      audience: child.audience,
      ttlSeconds: child.ttl_seconds,
      justification: child.justification,
      breakGlass: child.break_glass,
      authorizationDetails: details(),
      dpopJkt: params.dpop_jkt,
    }, proof);
    return answer(outcome);
  }

  if (params.dpop_jkt !== undefined) throw new InvalidRequest('dpop_jkt binds a child token to a key other than the proof\'s; elsewhere the proof names the key.');
  const subject = await presented(deps.auth, params.subject_token, 'subject_token', actor);
  if (!actor) verified(subject);

  if (params.request_id !== undefined) return answer(await deps.credentials.poll(subject, params.request_id, actor, proof));

  const input = parseInput(
    credentialRequestBody,
    {
      task_id: params.task_id,
      scopes: params.scope?.split(' ').filter(Boolean),
      audience: params.audience,
      ttl_seconds: params.ttl_seconds,
      justification: params.justification,
      break_glass: params.break_glass === 'true',
    },
    'body',
  );
  const ask = {
    taskId: input.task_id,
    scopes: input.scopes,
    audience: input.audience,
    ttlSeconds: input.ttl_seconds,
    justification: input.justification,
    breakGlass: input.break_glass,
    authorizationDetails: details(),
  };
  return answer(actor ? await deps.credentials.delegate(subject, actor, ask, proof) : await deps.credentials.request(subject, ask, proof));
}

const answer = (outcome: RequestOutcome): ExchangeResult => (outcome.status === 'issued' ? granted(outcome.view) : pending(outcome.view.request_id));

/** RFC 9396 section 6: the parameter holds the JSON array; anything amiss is `invalid_authorization_details`. */
function parseDetails(text: string): AuthorizationDetail[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new InvalidAuthorizationDetails('authorization_details must be a JSON array of objects (RFC 9396), form-encoded.', [
      { pointer: '#/authorization_details', detail: 'not JSON' },
    ]);
  }
  return parseInput(authorizationDetails, value, 'body', { at: '#/authorization_details', refusal: InvalidAuthorizationDetails });
}

/**
 * The one audience the token is for: `audience`, or RFC 8707's `resource` when `audience` is
 * absent. Two values of either, or both naming different targets, is `invalid_target`: a token
 * has one audience here, and guessing which was meant would hand out a token for the wrong one.
 */
function target(form: unknown): { audience?: string; resource?: undefined } {
  const { audience, resource } = (form ?? {}) as Record<string, unknown>;
  const values = (value: unknown) => (value === undefined ? [] : Array.isArray(value) ? value : [value]);
  const audiences = values(audience);
  const resources = values(resource);
  if (audiences.length > 1 || resources.length > 1) {
    throw new InvalidTarget('Name one target: a single audience (or resource) parameter; a token here has one audience.');
  }
  const [named] = audiences;
  const [resourceNamed] = resources;
  if (named !== undefined && resourceNamed !== undefined && named !== resourceNamed) {
    throw new InvalidTarget('audience and resource name different targets; send one of them.');
  }
  const chosen = named ?? resourceNamed;
  return chosen === undefined ? { resource: undefined } : { audience: chosen as string, resource: undefined };
}

/** A subject or actor token that is not accepted is a bad parameter of this request (400), not a failed login. */
async function presented(auth: Authenticator, token: string, parameter: 'subject_token' | 'actor_token', alongside?: Identity): Promise<Identity> {
  try {
    return await auth.verify(token, alongside);
  } catch (error) {
    if (error instanceof InvalidToken) {
      throw new InvalidRequest(`The ${parameter} was not accepted.`, undefined, { internal: error.internal });
    }
    throw error;
  }
}

function granted(view: {
  access_token: string;
  token_type: 'Bearer' | 'DPoP';
  expires_in: number;
  scopes: string[];
  request_id: string;
  authorization_details?: AuthorizationDetail[];
}): ExchangeResult {
  return {
    status: 200,
    body: {
      access_token: view.access_token,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: view.token_type,
      expires_in: view.expires_in,
      scope: view.scopes.join(' '),
      request_id: view.request_id,
      // RFC 9396 section 7: the token response names the authorization details granted.
      ...(view.authorization_details ? { authorization_details: view.authorization_details } : {}),
    },
  };
}

function pending(requestId: string): ExchangeResult {
  return {
    status: 400,
    body: {
      error: 'authorization_pending',
      error_description: 'The request needs approval; repeat the exchange with this request_id once it is approved.',
      request_id: requestId,
    },
  };
}
