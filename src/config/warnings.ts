import type { BrokerConfig } from './schema.js';

/** Something a valid configuration does that its operator should hear of at start and at each reload. */
export interface ConfigWarning {
  /** What the log line carries besides the file (plain data: it crosses from worker to primary). */
  fields: Record<string, unknown>;
  message: string;
}

/** The warnings a configuration calls for, in a stable order. */
export function configWarnings(config: BrokerConfig): ConfigWarning[] {
  const warnings: ConfigWarning[] = [];
  const devIssuers = config.identity.issuers.filter((issuer) => issuer.dev).map((issuer) => issuer.name);
  if (devIssuers.length > 0) {
    warnings.push({
      fields: { dev_issuers: devIssuers },
      message: 'DEVELOPMENT CONFIGURATION: local dev identity issuers are trusted; anyone who can read their key directory can be anyone. Never run this in production.',
    });
  }
  for (const issuer of config.identity.issuers) {
    // Without usernameClaim a person is their `sub`, and an SSO may give one person a `sub` per
    // client (OpenID Connect pairwise subjects; Microsoft Entra ID always does): signed in through
    // the console and through `jit login`, one person would be two, approving their own request.
    if (issuer.kind !== 'person' || issuer.usernameClaim !== undefined || issuer.audiences.length < 2) continue;
    warnings.push({
      fields: { issuer: issuer.name, audiences: issuer.audiences },
      message: `person issuer "${issuer.name}" takes tokens for several clients and has no usernameClaim: an SSO that gives each client its own subject for one person (pairwise subjects, as Microsoft Entra ID does) makes that person two people to every separation rule. Set usernameClaim to a claim the SSO gives alike for every client.`,
    });
  }
  return warnings;
}
