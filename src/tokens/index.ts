export { readOwnToken } from './inspect.js';
export { KEY_ENCRYPTION_KEY_ENV, KeyEncryptionKeyMismatch, openSealedKey, parseKeyEncryptionKeys, SealedKeyUnreadable } from './key-encryption.js';
export type { KeyEncryptionKeys } from './key-encryption.js';
export { KEY_VIEW_MAX_AGE_MS, openKeyring, RETIRE_GRACE_MS, SIGNING_SLACK_MS } from './keyring.js';
export type { Keyring, SigningKey } from './keyring.js';
export { mintAccessToken, sha256Token } from './mint.js';
export type { MintedToken } from './mint.js';
export { createTokenService } from './service.js';
export type { TokenService } from './service.js';
