export { createBreakGlassService } from './service.js';
export type { BreakGlassService } from './service.js';
