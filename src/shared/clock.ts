/** Milliseconds since the epoch. Passed in everywhere so tests control time. */
export type Clock = () => number;

export const systemClock: Clock = () => Date.now();

export const toIso = (ms: number): string => new Date(ms).toISOString();
export const toEpochSeconds = (ms: number): number => Math.floor(ms / 1000);
