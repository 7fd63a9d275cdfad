export { createNotifier, webhookPayload } from './webhooks.js';
export type { Notifier, NotifierOptions } from './webhooks.js';
