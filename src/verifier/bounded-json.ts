/**
 * The largest answer the verifier reads from the broker. A JWKS is a few KiB (a 4096-bit RSA key
 * is under 1 KiB of JSON) and a page of 1,000 revocations under 100 KiB: past this the answer is
 * refused, so a broken or hostile endpoint cannot make a resource server buffer without bound.
 */
export const MAX_ANSWER_BYTES = 256 * 1024;

/**
 * The body as JSON, read piece by piece and given up past `maxBytes`, declared or not. The same
 * approach as the broker's reading of an identity issuer's JWKS (`readCapped` in
 * identity/remote-jwks.ts), kept here as this package reaches only `dpop/` and `shared/`.
 */
export async function readBoundedJson(response: Response, maxBytes = MAX_ANSWER_BYTES): Promise<unknown> {
  const tooLarge = () => new Error(`the answer is larger than ${maxBytes} bytes`);
  if (Number(response.headers.get('content-length') ?? 0) > maxBytes) {
    void response.body?.cancel().catch(() => undefined);
    throw tooLarge();
  }
  if (response.body === null) throw new Error('the answer has no body');
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      // Whatever was not read is not wanted: release the connection.
      void reader.cancel().catch(() => undefined);
      throw tooLarge();
    }
    chunks.push(value);
  }
  const body = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
}
