export { slackMessage } from './slack.js';
export type { SlackMessage } from './slack.js';
export { checkpointPayload, createNotifier, webhookPayload } from './webhooks.js';
export type { CheckpointNotice, Notifier, NotifierOptions, WebhookPayload } from './webhooks.js';
