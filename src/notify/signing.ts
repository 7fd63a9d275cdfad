import { createHmac } from 'node:crypto';
import { ConfigError } from '../config/index.js';
import { readPrivateFile } from '../shared/key-files.js';

/**
 * Standard Webhooks signatures (standardwebhooks.com): HMAC-SHA256 over `id.timestamp.body`,
 * sent as `webhook-signature: v1,<base64>`. Receivers verify with any Standard Webhooks
 * library, and the id and timestamp let them refuse replays.
 */
export function signWebhook(secret: Buffer, id: string, timestamp: number, body: string): string {
  return `v1,${createHmac('sha256', secret).update(`${id}.${timestamp}.${body}`).digest('base64')}`;
}

const SECRET_FORMAT = /^whsec_([A-Za-z0-9+/]+={0,2})$/;
const MIN_SECRET_BYTES = 24;

/** Reads a webhook's secret file at start; a missing, exposed or malformed file stops the broker. */
export function readWebhookSecret(path: string, where: string): Buffer {
  let text: string;
  try {
    text = readPrivateFile(path).trim();
  } catch (error) {
    throw new ConfigError(path, [`${where}: ${(error as Error).message}`]);
  }
  const secret = Buffer.from(SECRET_FORMAT.exec(text)?.[1] ?? '', 'base64');
  if (secret.length < MIN_SECRET_BYTES) {
    throw new ConfigError(path, [`${where}: not a webhook secret (whsec_ and base64 of at least ${MIN_SECRET_BYTES} bytes)`]);
  }
  return secret;
}
