import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { BrokerConfig, WebhookEvent, WebhookFormat } from '../config/index.js';
import type { BrokerObserver } from '../observability/observer.js';
import type { Clock } from '../shared/clock.js';
import type { RequestRecord, Store } from '../store/index.js';
import { readWebhookSecret, signWebhook } from './signing.js';
import { checkpointPayload, webhookPayload, type CheckpointNotice } from './payloads.js';
import { slackCheckpoint, slackMessage } from './slack.js';

export interface Notifier {
  /** Queues delivery to every webhook listening for `event`; returns at once and never throws. */
  notify(event: WebhookEvent, request: RequestRecord): void;
  /** The same for an `audit.checkpoint`, so the chain's heads are kept off the broker's host. */
  checkpoint(notice: CheckpointNotice): void;
  /** Resolves when no delivery is in flight (shutdown and tests). */
  idle(): Promise<void>;
}

/** A webhook ready to deliver to: its secret read from `secretFile`. */
export interface Webhook {
  url: string;
  events: readonly WebhookEvent[];
  format: WebhookFormat;
  secret: Buffer | undefined;
}

/**
 * Reads every webhook's secret file now, so a missing, exposed or malformed one is refused at
 * start (or at a reload) rather than at 3 a.m.
 */
export function compileWebhooks(config: BrokerConfig['notify']): Webhook[] {
  return config.webhooks.map((webhook, i) => ({
    url: webhook.url,
    events: webhook.events,
    format: webhook.format,
    secret: webhook.secretFile === undefined ? undefined : readWebhookSecret(webhook.secretFile, `notify.webhooks.${i}.secretFile`),
  }));
}

/** What a delivery is made with, read at the moment an event is queued: a reload changes it for later events. */
export interface NotifySettings {
  config: Pick<BrokerConfig, 'notify' | 'console' | 'issuer'>;
  webhooks: readonly Webhook[];
}

export interface NotifierOptions {
  settings: () => NotifySettings;
  store: Pick<Store, 'append'>;
  logger: Logger;
  clock: Clock;
  fetch?: typeof fetch;
  /** First retry delay; each further retry waits four times longer. */
  backoffMs?: number;
  /** Waits that long before a retry (default a timer): tests see the schedule without waiting it out. */
  sleep?: (ms: number) => Promise<void>;
  /** Deliveries held at once for one receiver (waiting to retry or in flight), past which its new ones fail at once. */
  maxPending?: number;
  observer?: Pick<BrokerObserver, 'webhookDelivered'>;
}

/** A delivery's body in both formats: the contract's JSON, and a Slack message for `format: slack`. */
interface Bodies {
  json: object;
  slack: object;
}

/**
 * Delivers events to webhooks outside the request that caused them: a slow or broken receiver
 * never delays or fails a grant. Each delivery is retried with backoff; one that still fails is
 * logged and audited. A webhook URL may embed a secret, so only its origin is ever written down.
 * Secret files are read now, so a bad one stops the broker at start rather than at 3 a.m.
 */
export function createNotifier(options: NotifierOptions): Notifier {
  const { settings, store, logger, clock } = options;
  const send = options.fetch ?? fetch;
  const backoffMs = options.backoffMs ?? 1_000;
  const wait = options.sleep ?? sleep;
  const maxPending = options.maxPending ?? MAX_PENDING_DELIVERIES;
  const inFlight = new Set<Promise<void>>();
  /** Deliveries held per receiver URL: one that hangs sheds only its own, never another's breakglass.used. */
  const held = new Map<string, number>();
  /** Attempts in flight per receiver URL, and the deliveries waiting their turn to send. */
  const sending = new Map<string, { active: number; waiting: (() => void)[] }>();

  /**
   * A turn to send to this receiver. A slow one holds at most MAX_CONCURRENT_DELIVERIES
   * connections: its backlog waits here rather than each delivery opening a socket of its own,
   * which a thousand of them would make enough to run the process out of file descriptors.
   */
  const turn = (url: string): Promise<void> => {
    const slot = sending.get(url) ?? { active: 0, waiting: [] };
    sending.set(url, slot);
    if (slot.active < MAX_CONCURRENT_DELIVERIES) {
      slot.active += 1;
      return Promise.resolve();
    }
    return new Promise((resolve) => slot.waiting.push(resolve));
  };
  /** The turn passes to the next delivery waiting, in the order they came. */
  const endTurn = (url: string) => {
    const slot = sending.get(url);
    if (!slot) return;
    const next = slot.waiting.shift();
    if (next) return next();
    slot.active -= 1;
    if (slot.active === 0) sending.delete(url);
  };

  async function deliver(
    webhook: Webhook,
    config: BrokerConfig['notify'],
    event: WebhookEvent,
    bodies: (at: number) => Bodies,
    requestId: string | null,
  ): Promise<void> {
    const id = randomUUID();
    const body = JSON.stringify(bodies(clock())[webhook.format === 'slack' ? 'slack' : 'json']);
    const target = new URL(webhook.url).origin;
    let problem = '';
    for (let attempt = 0; attempt <= config.retries; attempt += 1) {
      if (attempt > 0) await wait(backoffMs * 4 ** (attempt - 1));
      await turn(webhook.url);
      // Each attempt is signed when it is sent (the id stays, for the receiver to take once): a
      // Standard Webhooks receiver refuses a timestamp more than five minutes old.
      const timestamp = Math.floor(clock() / 1000);
      try {
        const response = await send(webhook.url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'user-agent': 'jit-broker',
            'webhook-id': id,
            'webhook-timestamp': String(timestamp),
            ...(webhook.secret ? { 'webhook-signature': signWebhook(webhook.secret, id, timestamp, body) } : {}),
          },
          body,
          // Not followed: a redirect could send the event, which names people and scopes, elsewhere.
          // A 3xx is then not ok, a failed attempt like any other.
          redirect: 'manual',
          signal: AbortSignal.timeout(config.timeout),
        });
        await response.body?.cancel();
        if (response.ok) {
          options.observer?.webhookDelivered('delivered');
          return;
        }
        problem = `HTTP ${response.status}`;
      } catch (error) {
        problem = (error as Error).name === 'TimeoutError' ? 'timeout' : 'unreachable';
      } finally {
        endTurn(webhook.url);
      }
    }
    await failed(event, target, config.retries + 1, problem, requestId);
  }

  /** A delivery given up: logged and audited, naming only the receiver's origin. */
  async function failed(event: WebhookEvent, target: string, attempts: number, problem: string, requestId: string | null): Promise<void> {
    options.observer?.webhookDelivered('failed');
    logger.warn({ event, target, attempts, problem, request_id: requestId }, 'webhook delivery failed');
    try {
      await store.append([{ type: 'notify.failed', requestId, data: { event, target, attempts, problem } }]);
    } catch (error) {
      logger.error({ err: error, event, target }, 'could not audit a failed webhook delivery');
    }
  }

  const release = (url: string) => {
    const holding = (held.get(url) ?? 1) - 1;
    if (holding > 0) held.set(url, holding);
    else held.delete(url);
  };

  const queue = (event: WebhookEvent, bodies: (at: number) => Bodies, requestId: string | null) => {
    const { config, webhooks } = settings();
    for (const webhook of webhooks) {
      if (!webhook.events.includes(event)) continue;
      // A receiver down for hours holds each delivery through its retries: past the bound, its
      // new ones fail at once rather than piling up in memory. The bound is per receiver, so
      // memory stays bounded by the configuration while every other receiver is still served.
      const { url } = webhook;
      const holding = held.get(url) ?? 0;
      if (holding < maxPending) held.set(url, holding + 1);
      const delivery = (
        holding >= maxPending ? failed(event, new URL(url).origin, 0, 'backlog', requestId) : deliver(webhook, config.notify, event, bodies, requestId).finally(() => release(url))
      ).catch((error: unknown) => logger.error({ err: error, event }, 'webhook delivery crashed'));
      inFlight.add(delivery);
      void delivery.finally(() => inFlight.delete(delivery));
    }
  };

  return {
    notify(event, request) {
      queue(
        event,
        (at) => {
          // Bodies link to the console's page for the request, when there is a console.
          const { config } = settings();
          const json = webhookPayload(event, request, at, config.console ? config.issuer : undefined);
          return { json, slack: slackMessage(json) };
        },
        request.id,
      );
    },
    checkpoint(notice) {
      queue('audit.checkpoint', (at) => ({ json: checkpointPayload(notice, at), slack: slackCheckpoint(notice) }), null);
    },
    async idle() {
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    },
  };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

/** The deliveries a broker process holds at once for one receiver; a few hundred events a minute for the longest retries. */
export const MAX_PENDING_DELIVERIES = 1_000;

/** Attempts a broker process sends one receiver at once; the rest of its backlog waits its turn. */
export const MAX_CONCURRENT_DELIVERIES = 4;
