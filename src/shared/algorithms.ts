/**
 * The JWS algorithms that may ever prove who someone is, whatever is configured: asymmetric ones
 * only. `none` proves nothing, and with an HMAC the verifier holds the signing secret (in a DPoP
 * proof the "public" key would be the secret itself). Identity tokens and DPoP proofs alike.
 */
export const ASYMMETRIC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;
