export { openApiDocument } from './document.js';
export { findOperation, methodsOf, OPERATIONS } from './operations.js';
export type { Body } from './operations.js';
