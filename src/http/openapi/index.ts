export { openApiDocument } from './document.js';
export type { DocumentOptions } from './document.js';
export { findOperation, OPERATIONS } from './operations.js';
export type { Body, Operation } from './operations.js';
