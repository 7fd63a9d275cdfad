import { chmodSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startTestBroker } from '../helpers/broker.js';
import { ENGINE } from '../helpers/engine.js';
import { tempDir } from '../helpers/temp.js';

/**
 * SQLite applies to a database the -wal (or hot -journal) file it finds beside it when it opens
 * it: whoever may make files in the database's directory may rewrite its grants and its audit
 * log while the broker is stopped. Such a directory is refused, as a keyDir anyone may write to is.
 */
describe.runIf(ENGINE === 'sqlite')('a SQLite database in a directory every user may write to', () => {
  it('is refused at start, sticky or not, naming the directory', async () => {
    const t = await startTestBroker();
    try {
      for (const mode of [0o777, 0o1777]) {
        chmodSync(t.dir, mode);
        await expect(t.restart()).rejects.toThrow(
          expect.objectContaining({ code: 'database_dir_unsafe', message: expect.stringContaining(`${t.dir} (the directory of the database) is writable by every user (mode ${mode.toString(8)})`) }),
        );
      }
      chmodSync(t.dir, 0o700);
      await t.restart();
    } finally {
      await t.close();
    }
  });

  it('is never made so: the directory a first start creates is not writable by others, whatever the umask', async () => {
    const previous = process.umask(0);
    try {
      const dir = tempDir('jit-database-dir-');
      const t = await startTestBroker({ dir, configure: (config) => void (config.database = join(dir, 'data', 'broker.db')) });
      await t.close();
      expect(statSync(join(dir, 'data')).mode & 0o022).toBe(0);
    } finally {
      process.umask(previous);
    }
  });
});
