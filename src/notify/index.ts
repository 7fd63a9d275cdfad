export { slackMessage } from './slack.js';
export type { SlackMessage } from './slack.js';
export { createNotifier, webhookPayload } from './webhooks.js';
export type { Notifier, NotifierOptions, WebhookPayload } from './webhooks.js';
