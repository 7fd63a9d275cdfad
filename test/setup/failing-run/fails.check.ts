import { expect, it } from 'vitest';

// Not a *.test.ts file: only exit-code.test.ts runs it, through a vitest of its own.
it('fails', () => {
  expect('this run').toBe('failed');
});
