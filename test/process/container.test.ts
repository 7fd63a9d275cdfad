import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DockerfileParser, type Copy, type Instruction } from 'dockerfile-ast';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseConfig, createTestIssuers } from '../helpers/broker.js';
import { brokerBundle } from '../helpers/bundle.js';
import { until } from '../helpers/process.js';
import { spawn } from 'node:child_process';
import net from 'node:net';

/**
 * No container engine runs here, so the image is checked the way it is built and started: the
 * Dockerfile and the compose file parsed, every file they copy or mount present and not ignored,
 * and the image's command run with the image's environment, in a directory laid out as /app is.
 */

const ROOT = process.cwd();
const dockerfile = DockerfileParser.parse(readFileSync('Dockerfile', 'utf8'));
const instructions = dockerfile.getInstructions();
const compose = YAML.parse(readFileSync('docker-compose.yml', 'utf8')) as {
  services: Record<string, { build?: unknown; environment?: Record<string, string>; volumes?: string[]; user?: string; ports?: string[] }>;
  volumes?: Record<string, unknown>;
};
const dockerignore = readFileSync('.dockerignore', 'utf8').split('\n').map((line) => line.trim()).filter((line) => line && !line.startsWith('#'));

/** The instructions of each build stage, in order. */
const stages: Instruction[][] = [];
for (const instruction of instructions) {
  if (instruction.getKeyword() === 'FROM') stages.push([]);
  stages.at(-1)?.push(instruction);
}
const finalStage = stages.at(-1) as Instruction[];
const args = (instruction: Instruction) => instruction.getArguments().map((arg) => arg.getValue());

/** The final stage's ENV, as the image's processes see it. */
const imageEnv: Record<string, string> = Object.fromEntries(
  finalStage
    .filter((instruction) => instruction.getKeyword() === 'ENV')
    .flatMap((instruction) => (instruction as unknown as { getProperties(): { getName(): string; getValue(): string | null }[] }).getProperties())
    .map((property) => [property.getName(), property.getValue() ?? '']),
);

/** The image's command, JSON form. */
const command = (() => {
  const cmd = finalStage.filter((instruction) => instruction.getKeyword() === 'CMD').at(-1);
  return JSON.parse(cmd?.getArgumentsContent() ?? '[]') as string[];
})();

/** `.dockerignore` patterns are paths from the context root; these are all plain names here. */
const ignored = (path: string) => dockerignore.some((pattern) => path === pattern || path.startsWith(`${pattern}/`) || (pattern.endsWith('*') && path.startsWith(pattern.slice(0, -1))));

describe('the Dockerfile', () => {
  it('copies only files the build context holds and does not ignore', () => {
    const sources = instructions
      .filter((instruction) => instruction.getKeyword() === 'COPY' && (instruction as Copy).getFromFlag() === null)
      .flatMap((instruction) => args(instruction).filter((arg) => !arg.startsWith('--')).slice(0, -1));
    expect(sources).toEqual(expect.arrayContaining(['package.json', 'package-lock.json', 'src', 'migrations', 'config']));
    for (const source of sources) {
      expect(existsSync(source), source).toBe(true);
      expect(ignored(source), `${source} is in .dockerignore`).toBe(false);
    }
    // tsconfig.build.json extends tsconfig.json and compiles src/: both must be in the build stage.
    expect(sources).toEqual(expect.arrayContaining(['tsconfig.json', 'tsconfig.build.json']));
  });

  it('keeps host data, dependencies and builds out of the context', () => {
    for (const path of ['data', 'node_modules', 'dist', '.git']) expect(ignored(path), path).toBe(true);
  });

  it('runs the build as npm start does: dist/main.js from src/main.ts, as an unprivileged user, NODE_ENV=production', () => {
    const start = (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: { start: string } }).scripts.start;
    expect(command).toEqual(start.split(' '));
    expect(command.at(-1)).toBe('dist/main.js');
    expect(existsSync('src/main.ts')).toBe(true);
    expect(imageEnv.NODE_ENV).toBe('production');
    const user = finalStage.filter((instruction) => instruction.getKeyword() === 'USER').at(-1);
    expect(user?.getArgumentsContent()).toBe('node');
    expect(args(finalStage.find((instruction) => instruction.getKeyword() === 'WORKDIR') as Instruction)).toEqual(['/app']);
  });
});

describe('docker-compose.yml', () => {
  const broker = compose.services.broker as NonNullable<(typeof compose.services)[string]>;

  it('builds this directory and needs nothing from the shell: no variables, no user to guess', () => {
    expect(broker.build).toBe('.');
    expect(JSON.stringify(compose)).not.toContain('${');
    expect(broker.user).toBeUndefined();
  });

  it('mounts only what a fresh clone has, and keeps data in a named volume the image user owns', () => {
    const mounts = (broker.volumes ?? []).map((volume) => volume.split(':'));
    for (const [source] of mounts) {
      if (source?.startsWith('.') || source?.startsWith('/')) expect(existsSync(source), source).toBe(true);
      else expect(compose.volumes, `named volume ${source}`).toHaveProperty(source as string);
    }
    expect(mounts.find(([, target]) => target === '/app/data')?.[0]).not.toMatch(/^[./]/);
  });

  it('publishes the port on the host loopback only, and runs the development issuers knowingly', () => {
    expect(broker.ports).toEqual(['127.0.0.1:8080:8080']);
    expect(broker.environment?.BROKER_ALLOW_DEV_ISSUERS).toBe('true');
  });
});

describe('the image\'s entry point', () => {
  let app: string;
  beforeAll(() => {
    // /app as the image lays it out: config/ and migrations/ beside the code, an empty data/.
    app = mkdtempSync(join(tmpdir(), 'jit-image-'));
    cpSync('config', join(app, 'config'), { recursive: true });
  });
  afterAll(() => rmSync(app, { recursive: true, force: true }));

  /** The image's command with the image's environment only (plus what the test adds), from /app. */
  const runImage = async (extraArgs: string[] = [], env: Record<string, string> = {}) => {
    const nodeFlags = command.slice(1, -1);
    // dist/main.js as the build of src/main.ts now (the last test above holds the command to that file).
    const child = spawn(process.execPath, [...nodeFlags, await brokerBundle(), ...extraArgs], {
      cwd: app,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: app, ...imageEnv, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const output = { stdout: '', stderr: '' };
    child.stdout.on('data', (chunk: Buffer) => (output.stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output.stderr += chunk.toString()));
    const exited = new Promise<number | null>((done) => child.on('exit', (code) => done(code)));
    return { child, output, exited };
  };

  it('refuses the shipped development configuration: exit 78, naming each dev issuer and the flag', async () => {
    const run = await runImage();
    expect(await run.exited).toBe(78);
    expect(run.output.stderr).toContain('identity.issuers.0.dev: "dev-ci" is a development issuer, refused where NODE_ENV=production');
    expect(run.output.stderr).toContain('identity.issuers.1.dev: "dev-sso" is a development issuer');
    expect(run.output.stderr).toContain('BROKER_ALLOW_DEV_ISSUERS=true');
    expect(existsSync(join(app, 'data'))).toBe(false); // refused before anything was opened or created
  });

  it('starts it with the flag docker-compose.yml sets', async () => {
    // The compose environment, on a free loopback port rather than its 8080 on every interface.
    const run = await runImage([], { ...compose.services.broker?.environment, BROKER_CONFIG: join(app, 'config/broker.yaml'), PORT: '0', HOST: '127.0.0.1' });
    try {
      await until(() => run.output.stdout.includes('"msg":"broker listening"') || run.child.exitCode !== null);
      expect(run.output.stdout).toContain('DEVELOPMENT CONFIGURATION');
    } finally {
      run.child.kill('SIGTERM');
      expect(await run.exited).toBe(0);
    }
  });

  it('is healthy where a mounted configuration says the broker listens, and unhealthy once it stops', async () => {
    expect(readFileSync('Dockerfile', 'utf8')).toContain('CMD ["node", "dist/main.js", "--ready-check"]');
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    const mounted = join(app, 'on-its-port.yaml');
    const config = baseConfig(join(app, 'data-on-its-port'), await createTestIssuers()) as Record<string, any>;
    config.listen = { host: '127.0.0.1', port, workers: 1 };
    writeFileSync(mounted, YAML.stringify(config));
    // No PORT: the file alone says where the broker is.
    const broker = await runImage([], { BROKER_CONFIG: mounted });
    try {
      await until(() => broker.output.stdout.includes('"msg":"broker listening"') || broker.child.exitCode !== null);
      const healthy = await runImage(['--ready-check'], { BROKER_CONFIG: mounted });
      expect(await healthy.exited).toBe(0);
    } finally {
      broker.child.kill('SIGTERM');
      expect(await broker.exited).toBe(0);
    }
    const stopped = await runImage(['--ready-check'], { BROKER_CONFIG: mounted });
    expect(await stopped.exited).toBe(1);
    expect(stopped.output.stderr).toContain('jit-broker: not ready');
  });

  it('accepts a mounted production configuration', async () => {
    const issuers = await createTestIssuers();
    const mounted = join(app, 'production.yaml');
    writeFileSync(mounted, YAML.stringify(baseConfig(join(app, 'data'), issuers)));
    const run = await runImage(['--check-config', mounted], { BROKER_CONFIG: mounted });
    expect(await run.exited).toBe(0);
    expect(run.output.stdout).toContain(`${mounted}: valid (2 issuers, 5 scopes, 4 policies)`);
  });
});
