import { readFileSync } from 'node:fs';

/** This build's version, from package.json (two levels up from src/shared/ and from dist/shared/ alike). */
export const BROKER_VERSION: string = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;
