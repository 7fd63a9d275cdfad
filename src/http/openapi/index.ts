export { openApiDocument } from './document.js';
export { findOperation, OPERATIONS } from './operations.js';
export type { Body } from './operations.js';
