import type { CliIo } from './cli-io.js';
import { usage } from './errors.js';
import { claims } from './identity.js';

/**
 * The request a command acts on, from its argument. A JWT given there (a credential pasted where
 * its id belongs) is never sent: the broker would log it in the path and echo it in a 404. Where
 * the command takes a credential (`acceptsToken`), its `request_id` claim is read (decoded, not
 * verified: the broker decides what the caller may do) and `-` reads either from stdin;
 * elsewhere the token is refused. It is never shown.
 */
export function requestIdArgument(io: CliIo, argument: string | undefined, acceptsToken: boolean): string {
  if (argument === undefined || argument === '') throw usage(acceptsToken ? 'a request id or a token is required' : 'a request id is required');
  const text = (acceptsToken && argument === '-' ? io.readStdin() : argument).trim();
  if (!text) throw usage('stdin held no request id or token');
  if (!text.includes('.')) return text;
  if (!acceptsToken) throw usage('that is a token, not a request id: give the request id (the token\'s request_id claim, which jit decode shows)');
  const requestId = claims(text)?.request_id;
  if (typeof requestId !== 'string' || !requestId) throw usage('that is neither a request id nor a broker token (no request_id claim)');
  return requestId;
}
