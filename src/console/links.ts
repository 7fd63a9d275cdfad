/**
 * Where a person sees a request in the console: built from the broker's `issuer`, which is its
 * public base URL (CONTRACT section 2). Webhook bodies and chat messages link here.
 */
export function consoleRequestUrl(issuer: string, requestId: string): string {
  return `${issuer.replace(/\/+$/, '')}/console/requests/${encodeURIComponent(requestId)}`;
}

/** The redirect URI the console's client registers at the person issuer. */
export function consoleCallbackUrl(issuer: string): string {
  return `${issuer.replace(/\/+$/, '')}/console/callback`;
}
