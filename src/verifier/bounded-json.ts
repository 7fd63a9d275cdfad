import { readBoundedBody, utf8 } from '../shared/bounded-body.js';

/**
 * The largest answer the verifier reads from the broker. A JWKS is a few KiB (a 4096-bit RSA key
 * is under 1 KiB of JSON) and a page of 1,000 revocations under 100 KiB: past this the answer is
 * refused, so a broken or hostile endpoint cannot make a resource server buffer without bound.
 */
export const MAX_ANSWER_BYTES = 256 * 1024;

/** The body as JSON, given up past `maxBytes`, declared or not. */
export async function readBoundedJson(response: Response, maxBytes = MAX_ANSWER_BYTES): Promise<unknown> {
  if (response.body === null) throw new Error('the answer has no body');
  return JSON.parse(utf8(await readBoundedBody(response, maxBytes, () => new Error(`the answer is larger than ${maxBytes} bytes`))));
}
