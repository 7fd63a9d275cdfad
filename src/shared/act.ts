/**
 * RFC 8693 section 4.1, `act`: who acts for a token's subject. The current actor is outermost;
 * the one it acted after is nested under its own `act`, and so on. One shape for the broker that
 * writes it and for the verifier library that reads it.
 */
export interface ActClaim {
  iss: string;
  sub: string;
  act?: ActClaim;
}
