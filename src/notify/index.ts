export { slackMessage } from './slack.js';
export type { SlackMessage } from './slack.js';
export { checkpointPayload, compileWebhooks, createNotifier, webhookPayload } from './webhooks.js';
export type { CheckpointNotice, Notifier, NotifierOptions, NotifySettings, Webhook, WebhookPayload } from './webhooks.js';
