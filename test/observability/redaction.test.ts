import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/observability/index.js';

describe('log redaction', () => {
  it('blanks every token, proof, cookie and bearer header, at the top of a line or one level down', () => {
    const lines: string[] = [];
    const destination = new Writable({ write: (chunk, _encoding, done) => (lines.push(String(chunk)), done()) });
    const logger = createLogger({ level: 'info', destination });
    const secrets = {
      authorization: 'Bearer S1', cookie: 'sid=S2', dpop: 'S3', token: 'S4', access_token: 'S5', subject_token: 'S6',
      actor_token: 'S7', id_token: 'S8', refresh_token: 'S9', client_secret: 'S10',
    };
    logger.info(secrets, 'top');
    logger.info({ form: secrets, headers: { authorization: 'Bearer S11', cookie: 'S12', dpop: 'S13' } }, 'nested');
    const text = lines.join('');
    expect(text).not.toMatch(/S\d/);
    expect(text.match(/\[redacted\]/g)).toHaveLength(23);
  });
});
