/**
 * Plain http is allowed only to this machine (tests and development): anywhere else a token or
 * a key set would cross the network in clear. One definition for every place that asks.
 */

/** `localhost`, `[::1]` or an address of 127.0.0.0/8, as a URL's `hostname` spells them. */
export const isLoopbackHost = (hostname: string): boolean =>
  hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname);

/** https, or plain http to a loopback host. */
export const isSecureOrLoopback = (url: URL): boolean => url.protocol === 'https:' || (url.protocol === 'http:' && isLoopbackHost(url.hostname));
