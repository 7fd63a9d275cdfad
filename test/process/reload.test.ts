import { describe, expect, it } from 'vitest';
import { appliedByAll, type ReloadOutcome } from '../../src/process/reload.js';

const applied = (changed: string[]): Extract<ReloadOutcome, { status: 'applied' }> => ({ status: 'applied', file: 'broker.yaml', sha256: 'ab', text: '', changed, warnings: [] });

describe('a reload applied by several workers', () => {
  // Seen in CI: the worker asked first had started after the file was written, found nothing
  // changed, and the line said `changed: []` while the other worker changed scopes and policies.
  it('says what changed for any of them, whichever worker was asked first', () => {
    expect(appliedByAll(applied([]), [applied(['scopes', 'policies'])])).toMatchObject({ changed: ['scopes', 'policies'], file: 'broker.yaml' });
    expect(appliedByAll(applied(['scopes']), [applied(['scopes', 'policies']), applied([])])).toMatchObject({ changed: ['scopes', 'policies'] });
    expect(appliedByAll(applied([]), [])).toMatchObject({ changed: [] });
  });
});
