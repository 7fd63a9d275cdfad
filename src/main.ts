#!/usr/bin/env node
import cluster from 'node:cluster';
import { createServer, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { ConfigError, configWarnings, loadConfig, type LoadedConfig } from './config/index.js';
import { answerUnreadable } from './http/errors.js';
import { createLogger } from './observability/index.js';
import { readCommandLine } from './process/args.js';
import { runPrimary } from './process/primary.js';
import { isReloadOrder, logReload, warnAbout, type ReloadReport } from './process/reload.js';
import { holdSignals, type HeldSignals } from './process/signals.js';
import { receiveWorkerConfig } from './process/worker-config.js';
import { StartRefused } from './shared/errors.js';

/** How long in-flight requests get to finish after SIGTERM/SIGINT before the process exits anyway. */
const SHUTDOWN_GRACE_MS = 10_000;

async function main(): Promise<void> {
  const command = await readCommandLine(process.argv.slice(2), process.env);
  if ('exit' in command) {
    if (command.exit.stdout) process.stdout.write(command.exit.stdout);
    if (command.exit.stderr) process.stderr.write(command.exit.stderr);
    process.exit(command.exit.code);
  }
  const signals = holdSignals();
  const logger = cluster.isWorker ? createLogger().child({ worker: cluster.worker?.id }) : createLogger();
  const loaded = cluster.isWorker ? loadConfig(command.start.configFile, process.env, await receiveWorkerConfig()) : await loadStartingConfig(command.start.configFile);
  const { config } = loaded;

  if (cluster.isPrimary) warnAbout(logger, loaded.file, configWarnings(config));
  if (cluster.isPrimary && config.listen.workers > 1) {
    runPrimary({ workers: config.listen.workers, logger, host: config.listen.host, about: { issuer: config.issuer, config: loaded.file }, configText: loaded.text, signals });
    return;
  }
  await serve(loaded, logger, signals);
}

/**
 * The file, read and tested at start. A configuration whose own policyTests fail is refused like
 * an invalid one (ConfigError, exit 78). A worker of several is handed the text instead (tested
 * when the primary read it, or when a reload applied it): see process/worker-config.ts.
 */
async function loadStartingConfig(file: string): Promise<LoadedConfig> {
  const { loadTestedConfig } = await import('./policy-tests/index.js');
  return loadTestedConfig(file, process.env);
}

/**
 * One broker: the whole of it in a single process, or one worker of several. Signals held while
 * it starts are answered once it listens, or, for a stop seen before then, by closing the store
 * instead of listening: never while the store is opened or set up.
 */
async function serve(loaded: LoadedConfig, logger: Logger, signals: HeldSignals): Promise<void> {
  const { config } = loaded;
  // Loaded here, not at the top: the primary of several workers serves nothing and stays small.
  const { createBroker } = await import('./broker.js');
  const starting = createBroker({ config, source: { file: loaded.file, sha256: loaded.sha256 }, logger });
  if (cluster.isWorker) {
    // Listening before the broker is up: an order sent meanwhile must not be lost.
    process.on('message', (order: unknown) => {
      if (!isReloadOrder(order)) return;
      void starting
        .then((broker) => broker.reload(loaded.file, process.env, { record: order.record, text: order.text }))
        .then((outcome) => process.send?.({ type: 'jit:reloaded', id: order.id, outcome } satisfies ReloadReport))
        .catch(() => {}); // the broker did not start: this worker is on its way out, and the primary sees it go
    });
  }
  const broker = await starting;
  // A caller that trickles its request (or sends none) gives up its connection after
  // `requestTimeout`, checked every second, rather than holding it for node's default 5 minutes.
  const { requestTimeout } = config.listen;
  const server = createServer(
    { requestTimeout, headersTimeout: requestTimeout, connectionsCheckingInterval: Math.min(1_000, requestTimeout) },
    broker.app,
  );
  server.on('clientError', answerUnreadable);

  let stopping = false;
  // While stopping, every answer closes its connection: a keep-alive one would hold the stop for
  // node's keepAliveTimeout after its last request, or past the grace, and cut the database's close.
  const answering = new Set<ServerResponse>();
  const closeAfter = (res: ServerResponse) => {
    if (!res.headersSent) res.setHeader('Connection', 'close');
    else res.once('finish', () => setImmediate(() => server.closeIdleConnections()));
  };
  server.on('request', (_req, res: ServerResponse) => {
    if (stopping) return closeAfter(res);
    answering.add(res);
    res.once('close', () => answering.delete(res));
  });
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping: finishing in-flight requests');
    setTimeout(() => {
      logger.error('in-flight requests did not finish in time; exiting');
      process.exit(1);
    }, SHUTDOWN_GRACE_MS).unref();
    const closeBroker = () => {
      void broker.close().then(() => {
        logger.info('stopped');
        process.exit(0);
      });
    };
    if (!server.listening) {
      closeBroker();
      return;
    }
    server.close(closeBroker);
    server.closeIdleConnections();
    for (const res of answering) closeAfter(res);
  };
  // The catch-up runs while the broker serves (see Scheduler.start); a stop ends it between batches.
  void broker.scheduler.start();
  // Asked while the broker started: its store is open now, and closes without serving.
  const stopAsked = signals.stopAsked();
  if (stopAsked) {
    stop(stopAsked);
    return;
  }
  server.on('error', (error: NodeJS.ErrnoException) => {
    // An address in use, not this machine's, or not allowed: the operator's to fix, said in one line.
    const refused = ['EADDRINUSE', 'EADDRNOTAVAIL', 'EACCES', 'ENOTFOUND', 'EAI_AGAIN'].includes(error.code ?? '');
    if (refused) {
      logger.fatal({ code: error.code, host: config.listen.host, port: config.listen.port }, 'cannot listen');
      process.stderr.write(`jit-broker: cannot listen on ${config.listen.host}:${config.listen.port} (${error.code})\n`);
    } else {
      logger.fatal({ err: error }, 'cannot listen');
    }
    void broker.close().finally(() => process.exit(refused ? 78 : 1));
  });
  server.listen(config.listen.port, config.listen.host, () => {
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : config.listen.port;
    // With several workers, the primary says where the broker listens, once.
    const about = { url: `http://${config.listen.host}:${port}`, issuer: config.issuer, config: loaded.file };
    if (cluster.isWorker) logger.info(about, 'worker listening');
    else logger.info({ ...about, workers: 1 }, 'broker listening');
    signals.answer({
      // The same file again; an invalid one is refused and logged, and the running configuration
      // stays. A worker of several reloads when the primary says (above): SIGHUP to a whole
      // process group must not reload it twice.
      reload: () => {
        if (cluster.isPrimary) void broker.reload(loaded.file).then((outcome) => logReload(logger, outcome, { workers: 1 }));
      },
      stop,
    });
  });
}

main().catch((error: unknown) => {
  const logger = createLogger();
  if (error instanceof ConfigError) {
    // One line per bad field, and no stack trace: the fault is in the file, not the code.
    logger.fatal({ file: error.file, problems: error.problems }, 'invalid configuration; the broker will not start');
    process.stderr.write(`${error.message}\n`);
    process.exit(78); // EX_CONFIG
  }
  if (error instanceof StartRefused) {
    // Something the operator must fix (a key-encryption key that does not open the store's keys):
    // said in one line, no stack trace.
    logger.fatal({ code: error.code, problem: error.message }, 'the broker will not start');
    // Escaped: a kid or key id in the message is read from the database, whose writer could put
    // terminal control sequences there.
    process.stderr.write(`jit-broker: ${error.message.replace(/[\p{Cc}\p{Cf}]/gu, (c) => `\\u{${(c.codePointAt(0) as number).toString(16)}}`)}\n`);
    process.exit(78); // EX_CONFIG
  }
  logger.fatal({ err: error }, 'the broker could not start');
  process.exit(1);
});
