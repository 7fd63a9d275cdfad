export { consoleRoutes, CONSOLE_ASSETS_DIR, pageHeaders } from './routes.js';
export type { ConsoleDocument, ConsoleRouteDeps } from './routes.js';
export { consoleCallbackUrl, consoleRequestUrl } from './links.js';
export { DEV_SIGN_IN_PATH } from './dev-sign-in.js';
