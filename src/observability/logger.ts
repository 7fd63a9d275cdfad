import pino, { type DestinationStream, type Logger } from 'pino';

/**
 * Paths pino blanks in every log line, whatever logs them. The HTTP request serializer already
 * writes down only method, path and id; this list is the net under that: no bearer header,
 * cookie, DPoP proof or token (subject, actor, access, ID or refresh) may reach a log line by any
 * route, at the top of what is logged or one level down.
 */
const SECRET_NAMES = ['authorization', 'cookie', 'dpop', 'token', 'access_token', 'subject_token', 'actor_token', 'id_token', 'refresh_token', 'client_secret'];

export const REDACTED_PATHS = [
  'headers.authorization',
  'headers.cookie',
  'headers.dpop',
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers.dpop',
  'res.headers["set-cookie"]',
  ...SECRET_NAMES,
  ...SECRET_NAMES.map((name) => `*.${name}`),
];

export function createLogger(options: { level?: string; destination?: DestinationStream } = {}): Logger {
  return pino(
    {
      level: options.level ?? process.env.LOG_LEVEL ?? 'info',
      base: { service: 'jit-broker' },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    options.destination,
  );
}
