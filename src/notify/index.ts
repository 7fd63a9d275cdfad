export { checkpointPayload, createNotifier, webhookPayload } from './webhooks.js';
export type { CheckpointNotice, Notifier, NotifierOptions } from './webhooks.js';
