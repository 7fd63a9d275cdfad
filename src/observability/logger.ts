import pino, { type DestinationStream, type Logger } from 'pino';

/**
 * Paths pino blanks in every log line, whatever logs them. The HTTP request serializer already
 * writes down only method, path and id; this list is the net under that: no bearer header,
 * token or subject_token may reach a log line by any route.
 */
export const REDACTED_PATHS = [
  'authorization',
  'headers.authorization',
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
  'token',
  'access_token',
  'subject_token',
  'id_token',
  '*.authorization',
  '*.token',
  '*.access_token',
  '*.subject_token',
  '*.id_token',
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
