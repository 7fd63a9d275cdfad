/**
 * A second broker process for the two-process tests: opens the broker on the configuration
 * in argv[2] (JSON), with its clock fixed at argv[3], runs every scheduler job argv[4] times
 * as fast as it can, and exits.
 */
import { readFileSync } from 'node:fs';
import { createBroker } from '../../src/broker.js';
import { parseConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/observability/index.js';

const [configFile, now, rounds] = process.argv.slice(2) as [string, string, string];
const config = parseConfig(configFile, JSON.parse(readFileSync(configFile, 'utf8')));
const broker = await createBroker({ config, clock: () => Number(now), logger: createLogger({ level: 'silent' }) });
process.stdout.write('ready\n');
for (let i = 0; i < Number(rounds); i += 1) await broker.scheduler.runAll();
await broker.close();
process.stdout.write('done\n');
