import { createHash } from 'node:crypto';

/** RFC 9449 section 4.2 `ath`: base64url of the SHA-256 of the access token's ASCII text. */
export const accessTokenHash = (accessToken: string): string => createHash('sha256').update(accessToken, 'ascii').digest('base64url');
