import type { Request } from 'express';

const BASE = 'http://target.invalid';

/**
 * The path of a request target as routing reads it: without query or fragment, and in origin
 * form when the client sent the absolute form (`POST http://broker/oauth2/token`, RFC 9112
 * section 3.2.2); undefined for a target that is no URL.
 */
export const pathOfTarget = (target: string): string | undefined => (URL.canParse(target, BASE) ? new URL(target, BASE).pathname : undefined);

/** The path a request targets (see `pathOfTarget`); never `originalUrl` as sent, which may carry a query or a fragment. */
export const targetPath = (req: Request): string => pathOfTarget(req.originalUrl) ?? req.path;
