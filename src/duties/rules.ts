import type { BrokerConfig } from '../config/index.js';
import { objectKey, type AuthorizationDetail } from '../shared/authorization-details.js';
import { InvalidAuthorizationDetails, SeparationOfDuties } from '../shared/errors.js';
import type { DutyFinding, DutyProbe, Holder } from '../store/index.js';

/**
 * Duties, CONTRACT section 1: separation of duties across the lifecycle of one object. The same
 * person or pipeline must not train a model and later deploy that same model, nor write a policy
 * and approve it. These are the rules, pure: which steps a request takes part in, and the
 * refusals; the store keeps who took part and checks it atomically.
 */

/** One object a request takes part in, for one step of one duty. */
export interface DutyStep {
  duty: string;
  step: string;
  /** Names the step had before (`formerly`): participations under them are this step's. */
  formerly: readonly string[];
  /** The object, as duties compare it (`objectKey` of its identifier). */
  object: string;
  /** How long taking part binds once a grant has ended, in ms (Infinity: always). */
  within: number;
}

export interface Duties {
  /** The `authorization_details` types the configuration knows (each is one duty's). */
  readonly types: readonly string[];
  /** Refuses entries of a type no duty has (400 naming the field). */
  checkTypes(details: readonly AuthorizationDetail[]): void;
  /**
   * The steps a request takes part in: for each of its scopes that is a step, one per object it
   * names of that duty's type. Refuses a step scope whose objects are not named (400), and a
   * request holding scopes of two steps of one duty (403).
   */
  stepsOf(scopes: readonly string[], details: readonly AuthorizationDetail[]): DutyStep[];
  /**
   * Refuses (400) a step scope whose objects are not named, before any policy is asked: a
   * policy's `identifiers` would otherwise refuse it first, as a scope not granted (403).
   */
  checkObjectsNamed(scopes: readonly string[], details: readonly AuthorizationDetail[]): void;
  /** The step a scope is, if it is one: its duty, the step, and the type of the objects it names. */
  stepOf(scope: string): { duty: string; step: string; type: string } | undefined;
}

interface CompiledStep {
  duty: string;
  type: string;
  step: string;
  formerly: readonly string[];
  within: number;
}

export function compileDuties(config: Pick<BrokerConfig, 'duties'>): Duties {
  const types = config.duties.map((duty) => duty.type);
  /** The configuration refuses a scope in two steps, so this map is a function. */
  const stepOf = new Map<string, CompiledStep>();
  for (const duty of config.duties) {
    for (const step of duty.steps) {
      for (const scope of step.scopes) {
        stepOf.set(scope, { duty: duty.name, type: duty.type, step: step.name, formerly: step.formerly, within: duty.within ?? Number.POSITIVE_INFINITY });
      }
    }
  }

  return {
    types,

    checkTypes(details) {
      const errors = details.flatMap((detail, i) =>
        types.includes(detail.type) ? [] : [{ pointer: `#/authorization_details/${i}/type`, detail: `"${detail.type}" is not a type this broker knows` }],
      );
      if (errors.length > 0) {
        const known = types.length > 0 ? `one of ${types.map((type) => `"${type}"`).join(', ')}` : 'none: no duty is configured';
        throw new InvalidAuthorizationDetails(`authorization_details: the types are the configured duties' (${known}).`, errors);
      }
    },

    stepsOf(scopes, details) {
      const taken = scopes.flatMap((scope) => {
        const step = stepOf.get(scope);
        return step ? [{ ...step, scope }] : [];
      });
      for (const [i, step] of taken.entries()) {
        const other = taken.slice(0, i).find((earlier) => earlier.duty === step.duty && earlier.step !== step.step);
        if (other) {
          const objects = [...new Set(details.flatMap((d) => (d.type === step.type && d.identifier !== undefined ? [objectKey(d.identifier)] : [])))].filter(Boolean);
          throw new SeparationOfDuties(
            `Duty "${step.duty}": one request may not take part in two steps of one object (${other.scope} is step "${other.step}", ${step.scope} is step "${step.step}"${objects.length > 0 ? `, for ${objects.map((o) => JSON.stringify(o)).join(', ')}` : ''}).`,
            { extensions: { duty: step.duty, steps: [other.step, step.step], ...(objects.length > 0 ? { object: objects[0], objects } : {}) } },
          );
        }
      }
      const steps = new Map<string, DutyStep>();
      for (const step of taken) {
        for (const object of objectsNamed(step, details)) {
          steps.set(`${step.duty}\n${object}`, { duty: step.duty, step: step.step, formerly: step.formerly, object, within: step.within });
        }
      }
      return [...steps.values()];
    },

    checkObjectsNamed(scopes, details) {
      for (const scope of scopes) {
        const step = stepOf.get(scope);
        if (step) objectsNamed({ ...step, scope }, details);
      }
    },

    stepOf(scope) {
      const step = stepOf.get(scope);
      return step && { duty: step.duty, step: step.step, type: step.type };
    },
  };
}

/** The objects a step scope's request names (normalised), or a 400 when it names none, or one without an identifier. */
function objectsNamed(step: CompiledStep & { scope: string }, details: readonly AuthorizationDetail[]): string[] {
  const named = details.map((detail, i) => ({ detail, i })).filter(({ detail }) => detail.type === step.type);
  if (named.length === 0) {
    throw new InvalidAuthorizationDetails(
      `Scope ${step.scope} is step "${step.step}" of duty "${step.duty}": name its object with an authorization_details entry of type "${step.type}" and an identifier.`,
      [{ pointer: '#/authorization_details', detail: `needs an entry of type "${step.type}" with an identifier` }],
    );
  }
  const unnamed = named.find(({ detail }) => detail.identifier === undefined || objectKey(detail.identifier) === '');
  if (unnamed) {
    throw new InvalidAuthorizationDetails(`authorization_details/${unnamed.i}: an entry of type "${step.type}" names the object of step "${step.step}" by its identifier.`, [
      { pointer: `#/authorization_details/${unnamed.i}/identifier`, detail: `required for step "${step.step}" of duty "${step.duty}"` },
    ]);
  }
  return named.map(({ detail }) => objectKey(detail.identifier as string));
}

/**
 * 403 `separation_of_duties` (at `/oauth2/token` 400 `invalid_scope`) for someone who took part
 * in another step of the same object: naming the duty, the object and the step already taken.
 */
export function dutyConflict(found: DutyFinding, as: 'request' | 'approval'): SeparationOfDuties {
  const who = as === 'approval' ? 'you (under any of your identities) took part' : 'a participant of this request (its identity, its person, its job\'s initiator or an actor) took part';
  return new SeparationOfDuties(
    `Duty "${found.duty}": ${who} in step "${found.step}" for ${JSON.stringify(found.object)} (request ${found.requestId}); whoever took part in one step may not take part in another for the same object.`,
    { extensions: { duty: found.duty, object: found.object, step: found.step, conflicting_request_id: found.requestId } },
  );
}

/** What the store checks and records for the steps a request or a decision takes part in; none when it takes part in none. */
export function dutyProbe(steps: readonly DutyStep[], participants: readonly Holder[], now: number): DutyProbe | undefined {
  if (steps.length === 0) return undefined;
  return {
    steps: steps.map(({ duty, object, step, formerly, within }) => ({ duty, object, step, formerly, endedAfter: Number.isFinite(within) ? now - within : Number.MIN_SAFE_INTEGER })),
    participants,
  };
}
