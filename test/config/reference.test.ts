import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BEGIN, configReference, END } from '../../scripts/config-reference.js';

describe('the configuration reference', () => {
  it('in the README is the one the schema generates', () => {
    const readme = readFileSync('README.md', 'utf8');
    const documented = readme.slice(readme.indexOf(BEGIN) + BEGIN.length, readme.indexOf(END)).trim();
    // When this fails: npm run config:reference -- --write
    expect(documented).toBe(configReference());
  });
});
