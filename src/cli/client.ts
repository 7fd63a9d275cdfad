import { CliError, type CliIo } from './io.js';

/** A thin HTTP client for the broker's API, speaking as one identity. */
export interface BrokerClient {
  get<T = Record<string, unknown>>(path: string): Promise<T>;
  post<T = Record<string, unknown>>(path: string, body?: unknown): Promise<{ status: number; body: T }>;
  /** GETs a path and returns the raw response (exports stream). */
  raw(path: string): Promise<Response>;
}

export function createClient(io: CliIo, baseUrl: string, token: string): BrokerClient {
  const base = baseUrl.replace(/\/+$/, '');

  async function call(method: string, path: string, body?: unknown): Promise<Response> {
    let response: Response;
    try {
      response = await io.fetch(`${base}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          accept: 'application/json',
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
    } catch {
      throw new CliError(`cannot reach the broker at ${base} (is it running? see --broker or BROKER_URL)`);
    }
    if (response.status >= 400) throw await problem(response);
    return response;
  }

  return {
    async get(path) {
      return (await (await call('GET', path)).json()) as never;
    },
    async post(path, body) {
      const response = await call('POST', path, body);
      const text = await response.text();
      return { status: response.status, body: (text ? JSON.parse(text) : {}) as never };
    },
    raw: (path) => call('GET', path),
  };
}

async function problem(response: Response): Promise<CliError> {
  let detail = `HTTP ${response.status}`;
  try {
    const body = (await response.json()) as { detail?: string; type?: string; errors?: { pointer: string; detail: string }[] };
    const type = body.type?.split(':').pop();
    detail = `${type ? `${type}: ` : ''}${body.detail ?? detail}`;
  } catch {
    // Not JSON: the status says enough.
  }
  return new CliError(detail);
}
