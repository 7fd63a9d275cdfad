export { compileDuties, dutyConflict, dutyProbe } from './rules.js';
export type { Duties, DutyStep } from './rules.js';
