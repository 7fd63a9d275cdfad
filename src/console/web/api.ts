import { currentSession, forget } from './auth.js';

/**
 * The broker's `/v1` API, as every client calls it: the person's ID token as Bearer identity,
 * in a header, never a URL. A 401 means the token is no longer good: it is forgotten.
 */

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    detail: string,
  ) {
    super(detail);
  }
}

/** The sign-in ended (expired or refused): the page offers to sign in again. */
export class SignedOut extends Error {}

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export interface Identity {
  iss: string;
  sub: string;
}

/** RFC 8693 `act`: the current actor, earlier actors nested under it. */
export interface ActorChain extends Identity {
  act?: ActorChain;
}

/** RFC 9396: an object the request acts on. */
export interface AuthorizationDetail {
  type: string;
  identifier?: string;
  actions?: string[];
  locations?: string[];
  datatypes?: string[];
  privileges?: string[];
}

export interface RequestView {
  request_id: string;
  status: 'pending_approval' | 'approved' | 'issued' | 'denied' | 'expired' | 'revoked';
  requester: Identity;
  initiator?: string;
  bound_claims?: Record<string, unknown>;
  act?: ActorChain;
  authorization_details?: AuthorizationDetail[];
  task_id: string;
  scopes: string[];
  audience: string;
  ttl_seconds: number;
  justification: string | null;
  break_glass: boolean;
  digest: string;
  approvals_required: number;
  approvals: { iss: string; sub: string; decision: 'approve' | 'deny'; reason: string; at: string }[];
  created_at: string;
  expires_at: string;
  issued_at?: string;
  ended_at?: string;
  revoke_reason?: string;
  review?: { status: 'pending' | 'done'; due_at: string; overdue: boolean; outcome?: string; notes?: string; reviewer?: Identity; reviewed_at?: string };
}

export interface Issuance {
  jti: string;
  request_id: string;
  requester: Identity;
  task_id: string;
  scopes: string[];
  audience: string;
  issued_at: string;
  expires_at: string;
  status: string;
  approvers?: { iss: string; sub: string; at: string }[] | null;
  break_glass: boolean;
  revoked_at?: string;
  revoke_reason?: string;
  act?: ActorChain;
  authorization_details?: AuthorizationDetail[];
}

export async function call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<Response> {
  const session = currentSession();
  if (!session) throw new SignedOut('Not signed in.');
  // The broker would take a token a little past its exp (its clock skew): this page never sends one.
  if (Date.now() >= session.expiresAt) {
    forget();
    throw new SignedOut('Your sign-in has expired: sign in again to go on.');
  }
  const response = await fetch(path, {
    method,
    headers: {
      authorization: `Bearer ${session.idToken}`,
      accept: 'application/json',
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    credentials: 'omit',
    cache: 'no-store',
  });
  if (response.status === 401) {
    forget();
    throw new SignedOut('Your sign-in has expired or was not accepted.');
  }
  if (!response.ok) {
    let type = 'error';
    let detail = `The broker answered ${response.status}.`;
    try {
      const problem = (await response.json()) as { type?: unknown; detail?: unknown };
      if (typeof problem.type === 'string') type = problem.type.split(':').pop() ?? type;
      if (typeof problem.detail === 'string') detail = problem.detail;
    } catch {
      // Not problem+json: the status says enough.
    }
    throw new ApiError(response.status, type, detail);
  }
  return response;
}

export const get = async <T>(path: string): Promise<T> => (await (await call('GET', path)).json()) as T;
export const post = async <T>(path: string, body: unknown): Promise<T> => (await (await call('POST', path, body)).json()) as T;
