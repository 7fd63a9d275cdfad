export { createBreakGlassService } from './service.js';
export type { BreakGlassService, ReviewInput } from './service.js';
