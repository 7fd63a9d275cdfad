import { Router, type Response } from 'express';
import { stringify } from 'csv-stringify/sync';
import type { IssuanceView } from '../../audit/index.js';
import { toIso } from '../../shared/clock.js';
import type { AppDeps } from '../deps.js';
import { identityOf } from '../auth.js';
import { objectKey } from '../../shared/authorization-details.js';
import { checkpointQuery, custodyQuery, entitlementsQuery, eventsQuery, issuancesQuery, verifyQuery } from '../schemas.js';
import { parseInput } from '../validation.js';

const CSV_COLUMNS = [
  'jti', 'request_id', 'requester_iss', 'requester_sub', 'task_id', 'scopes', 'audience', 'justification',
  'issued_at', 'expires_at', 'status', 'approvers', 'break_glass', 'revoked_at', 'revoke_reason', 'authorization_details', 'act',
];

const csvRow = (row: IssuanceView) => [
  row.jti, row.request_id, row.requester.iss, row.requester.sub, row.task_id, row.scopes.join(' '), row.audience,
  row.justification ?? '', row.issued_at, row.expires_at, row.status, JSON.stringify(row.approvers), String(row.break_glass),
  row.revoked_at ?? '', row.revoke_reason ?? '', row.authorization_details ? JSON.stringify(row.authorization_details) : '',
  row.act ? JSON.stringify(row.act) : '',
];

/**
 * Writes every page to the response as it comes, waiting when the client reads slowly and
 * stopping when it goes away: memory holds one page, however many rows match.
 */
async function stream<T>(res: Response, pages: AsyncIterable<T[]>, encode: (rows: T[], first: boolean) => string): Promise<void> {
  let first = true;
  for await (const rows of pages) {
    if (res.destroyed) return;
    const chunk = encode(rows, first);
    first = false;
    if (chunk && !res.write(chunk)) await drained(res);
  }
  res.end();
}

/** Resolves when the client has taken what was written, or has gone. */
function drained(res: Response): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

const ndjson = <T>(rows: T[]) => rows.map((row) => `${JSON.stringify(row)}\n`).join('');

/** `/v1/audit`: who held what, when, approved by whom, and why; and whether the record is intact. */
export function auditRoutes({ audit, clock }: AppDeps): Router {
  const router = Router({ caseSensitive: true });
  // Who may ask comes before what is asked: an outsider's malformed query gets 403, not a 400
  // describing the filters.
  router.use((_req, res, next) => {
    audit.authorize(identityOf(res));
    next();
  });

  router.get('/issuances', async (req, res) => {
    const { since, until, subject, scope, status, break_glass, type, identifier, actor, limit, cursor, format } = parseInput(issuancesQuery, req.query, 'query');
    const filter = { since, until, subject, scope, status, breakGlass: break_glass, type, object: identifier === undefined ? undefined : objectKey(identifier), actor };
    if (format === 'json') {
      res.json(await audit.issuances(identityOf(res), filter, cursor, limit));
      return;
    }
    const pages = audit.exportIssuances(identityOf(res), filter);
    const name = `issuances-${toIso(clock()).replace(/[:.]/g, '-')}`;
    if (format === 'ndjson') {
      res.attachment(`${name}.ndjson`).type('application/x-ndjson');
      await stream(res, pages, ndjson);
    } else {
      res.attachment(`${name}.csv`).type('text/csv; charset=utf-8');
      // escape_formulas: a justification such as =HYPERLINK(...) stays text in a spreadsheet.
      await stream(res, pages, (rows, first) =>
        stringify(rows.map(csvRow), { header: first, columns: CSV_COLUMNS, escape_formulas: true, record_delimiter: 'windows' }),
      );
    }
  });

  router.get('/events', async (req, res) => {
    const { since, until, type, request_id, limit, cursor, format } = parseInput(eventsQuery, req.query, 'query');
    const filter = {
      since: since === undefined ? undefined : toIso(since),
      until: until === undefined ? undefined : toIso(until),
      type,
      requestId: request_id,
    };
    if (format === 'json') {
      res.json(await audit.events(identityOf(res), filter, cursor, limit));
      return;
    }
    res.type('application/x-ndjson');
    await stream(res, audit.exportEvents(identityOf(res), filter), ndjson);
  });

  router.get('/duties', async (req, res) => {
    const { duty, identifier, limit, cursor } = parseInput(custodyQuery, req.query, 'query');
    res.json(await audit.custody(identityOf(res), duty, identifier, cursor, limit));
  });

  router.get('/entitlements', async (req, res) => {
    const { since } = parseInput(entitlementsQuery, req.query, 'query');
    res.json(await audit.entitlements(identityOf(res), since));
  });

  router.get('/verify', async (req, res) => {
    const { checkpoint } = parseInput(verifyQuery, req.query, 'query');
    res.json(await audit.verify(identityOf(res), checkpoint));
  });

  router.get('/checkpoint', async (req, res) => {
    parseInput(checkpointQuery, req.query, 'query');
    res.json(await audit.checkpoint(identityOf(res)));
  });

  return router;
}
