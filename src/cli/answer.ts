/** Reading what a server answered, bounded: the broker's, an SSO's, a CI system's token endpoint. */
import { readBoundedBody, utf8 } from '../shared/bounded-body.js';
import { CliError } from './errors.js';

/** The largest answer read whole (a page of a listing is far smaller): a broken or hostile server cannot fill memory. */
const MAX_ANSWER_BYTES = 32 * 1024 * 1024;

/** An answer as JSON, read up to MAX_ANSWER_BYTES; throws on anything else (an SSO's, GitHub's: the caller says whose). */
export async function boundedJson(response: Response): Promise<unknown> {
  return JSON.parse(utf8(await readBoundedBody(response, MAX_ANSWER_BYTES, () => new Error('too large'))));
}

/** An answer's text, read up to MAX_ANSWER_BYTES. */
export async function answerText(response: Response, base: string): Promise<string> {
  const bytes = await readBoundedBody(response, MAX_ANSWER_BYTES, () => new CliError(`the answer from ${base} is larger than ${MAX_ANSWER_BYTES / 1024 / 1024} MiB: is that the broker?`));
  try {
    return utf8(bytes);
  } catch {
    throw new CliError(`the answer from ${base} is not UTF-8 text: is that the broker?`);
  }
}
