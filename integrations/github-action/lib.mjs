// @ts-check
/**
 * The little of the GitHub Actions runner protocol this action needs (inputs, outputs, masks,
 * state for the post step) and the broker calls it makes, with no dependencies: the action
 * runs from this folder as it is checked out, with nothing installed.
 */
import { appendFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';

/** A failure to report as the step's error: never carries a token. */
export class ActionError extends Error {}

/** @param {string} name @param {{ required?: boolean }} [options] */
export function input(name, options = {}) {
  const value = (process.env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`] ?? '').trim();
  if (options.required && !value) throw new ActionError(`input ${name} is required`);
  return value;
}

/** @param {string} name */
export function booleanInput(name) {
  const value = input(name).toLowerCase();
  if (value === 'true' || value === 'false') return value === 'true';
  throw new ActionError(`input ${name} must be true or false`);
}

/** @param {string} name @param {string} value */
export const setOutput = (name, value) => fileCommand('GITHUB_OUTPUT', name, value);
/** @param {string} name @param {string} value */
export const exportVariable = (name, value) => fileCommand('GITHUB_ENV', name, value);
/** @param {string} name @param {string} value */
export const saveState = (name, value) => fileCommand('GITHUB_STATE', name, value);
/** @param {string} name */
export const state = (name) => process.env[`STATE_${name}`] ?? '';

/**
 * Appends `name<<DELIMITER`, the value and the delimiter to the runner's file, the form that
 * allows any value; the delimiter is random, so no value can end the entry early.
 * @param {string} variable @param {string} name @param {string} value
 */
function fileCommand(variable, name, value) {
  const path = process.env[variable];
  if (!path) throw new ActionError(`${variable} is not set: is this running in GitHub Actions?`);
  const delimiter = `ghadelimiter_${randomUUID()}`;
  appendFileSync(path, `${name}<<${delimiter}\n${value}\n${delimiter}\n`, 'utf8');
}

/** @param {string} text */
const escapeData = (text) => text.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');

/** Tells the runner to hide this value in every later log line. @param {string} secret */
export const mask = (secret) => process.stdout.write(`::add-mask::${escapeData(secret)}\n`);
/** @param {string} text */
export const info = (text) => process.stdout.write(`${text}\n`);
/** @param {string} text */
export const warning = (text) => process.stdout.write(`::warning::${escapeData(text)}\n`);
/** @param {string} text */
export const error = (text) => process.stdout.write(`::error::${escapeData(text)}\n`);

/** Runs a step: an error becomes the step's `::error::` line and exit code 1. @param {() => Promise<void>} step */
export function runStep(step) {
  step().catch((/** @type {unknown} */ failure) => {
    error(failure instanceof ActionError ? failure.message : `unexpected failure: ${failure instanceof Error ? failure.name : 'error'}`);
    process.exitCode = 1;
  });
}

/**
 * A duration: 30s, 5m, 1h, 1d, or a bare number of seconds. Answered in milliseconds.
 * @param {string} text @param {string} name
 */
export function duration(text, name) {
  const match = /^(\d+)(ms|s|m|h|d)?$/.exec(text);
  if (!match) throw new ActionError(`input ${name}: ${text} is not a duration such as 30s, 5m or 1h`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] ?? 's'] ?? 1000;
  return Number(match[1]) * unit;
}

/**
 * The job's OIDC token with the broker's audience, from the endpoint the runner gives a job
 * whose workflow grants `id-token: write`. Masked before anything else can print it.
 * @param {string} audience
 */
export async function oidcToken(audience) {
  const requestUrl = process.env.ACTIONS_ID_TOKEN_REQUEST_URL;
  const requestToken = process.env.ACTIONS_ID_TOKEN_REQUEST_TOKEN;
  if (!requestUrl || !requestToken) {
    throw new ActionError('no OIDC token for this job: give the workflow or job `permissions: id-token: write`');
  }
  const url = new URL(requestUrl);
  url.searchParams.set('audience', audience);
  /** @type {Response} */
  let response;
  try {
    response = await fetch(url, { headers: { authorization: `Bearer ${requestToken}`, accept: 'application/json' }, signal: AbortSignal.timeout(30_000) });
  } catch {
    throw new ActionError('cannot reach the GitHub Actions OIDC token endpoint');
  }
  if (response.status !== 200) throw new ActionError(`the GitHub Actions OIDC token endpoint answered HTTP ${response.status}`);
  const body = /** @type {{ value?: unknown }} */ (await response.json().catch(() => ({})));
  if (typeof body.value !== 'string' || !body.value) throw new ActionError('the GitHub Actions OIDC token endpoint answered without a token');
  mask(body.value);
  return body.value;
}

/**
 * The broker's API as this job: a fresh OIDC token on every call (a wait for approval may
 * outlast one), the broker's problem details turned into one line.
 * @param {string} brokerUrl @param {string} audience
 */
export function brokerClient(brokerUrl, audience) {
  let base;
  try {
    base = new URL(brokerUrl);
  } catch {
    throw new ActionError('input broker-url is not a URL');
  }
  if (base.protocol !== 'https:' && !(base.protocol === 'http:' && /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/.test(base.hostname))) {
    throw new ActionError('input broker-url must be https (the OIDC token must not cross the network in clear text)');
  }
  const root = base.href.replace(/\/+$/, '');
  /**
   * @param {string} method @param {string} path @param {unknown} [body]
   * @returns {Promise<{ status: number, body: Record<string, any> }>}
   */
  return async function call(method, path, body) {
    const token = await oidcToken(audience);
    /** @type {Response} */
    let response;
    try {
      response = await fetch(`${root}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, accept: 'application/json', ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(30_000),
      });
    } catch {
      throw new ActionError(`cannot reach the broker at ${root}`);
    }
    const text = await response.text();
    /** @type {Record<string, any>} */
    let parsed = {};
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch {
      throw new ActionError(`the answer from ${root} is not JSON (HTTP ${response.status}): is that the broker?`);
    }
    if (response.status === 401) {
      throw new ActionError('the broker did not accept the job\'s OIDC token: check its GitHub issuer (audience, claims) and the identity-audience input');
    }
    if (response.status >= 400) {
      const type = typeof parsed.type === 'string' ? `${parsed.type.split(':').pop()}: ` : '';
      throw new ActionError(`${type}${typeof parsed.detail === 'string' ? parsed.detail : `HTTP ${response.status}`}`);
    }
    return { status: response.status, body: parsed };
  };
}
