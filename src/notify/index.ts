export { compileWebhooks, createNotifier, webhookPayload } from './webhooks.js';
export type { Notifier, NotifierOptions, NotifySettings, Webhook } from './webhooks.js';
