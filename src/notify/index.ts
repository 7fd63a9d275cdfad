export { slackMessage } from './slack.js';
export type { SlackMessage } from './slack.js';
export { checkpointPayload, webhookPayload } from './payloads.js';
export type { CheckpointNotice, WebhookPayload } from './payloads.js';
export { compileWebhooks, createNotifier } from './webhooks.js';
export type { Notifier, Webhook } from './webhooks.js';
