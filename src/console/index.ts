export { consoleRoutes } from './routes.js';
export type { ConsoleDocument } from './routes.js';
export { consoleCallbackUrl, consoleRequestUrl } from './links.js';
export { DEV_SIGN_IN_PATH } from './dev-sign-in.js';
