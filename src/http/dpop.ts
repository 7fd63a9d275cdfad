import type { Request } from 'express';
import type { PresentedProof } from '../credentials/index.js';
import { dpopTargetUri, singleDpopHeader } from '../dpop/index.js';
import { targetPath } from './target-path.js';

/**
 * The DPoP proof a request carries (one `DPoP` header at most), with the URL it must name: the
 * broker's public `issuer` plus the path, never the Host header, which the client chooses.
 */
export function presentedProof(req: Request, issuer: string): PresentedProof | undefined {
  const proof = singleDpopHeader(req);
  return proof === undefined ? undefined : { proof, url: dpopTargetUri(issuer, targetPath(req)) };
}
