import { OpenAPIRegistry, OpenApiGeneratorV31, type RouteConfig } from '@asteasolutions/zod-to-openapi';
import { OPERATIONS, type Body } from './operations.js';

export interface DocumentOptions {
  /** The broker's `issuer`, its public base URL. */
  issuer: string;
  version: string;
}

const content = (bodies: readonly Body[]) =>
  Object.fromEntries(bodies.map((body) => [body.contentType, { schema: body.schema, ...(body.example !== undefined ? { example: body.example } : {}) }]));

/**
 * The OpenAPI 3.1 document of the broker's HTTP API, generated from the operation table, whose
 * request schemas are those the routes validate with.
 */
export function openApiDocument(options: DocumentOptions) {
  const registry = new OpenAPIRegistry();
  registry.registerComponent('securitySchemes', 'identityToken', {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
    description:
      'An identity JWT from an issuer the broker trusts (a CI OIDC token, a Kubernetes service-account token, a SPIFFE JWT-SVID, an SSO ID token). Never a broker-minted access token.',
  });
  for (const operation of OPERATIONS) {
    const route: RouteConfig = {
      method: operation.method,
      path: operation.path,
      operationId: operation.operationId,
      summary: operation.summary,
      ...(operation.description ? { description: operation.description } : {}),
      tags: [operation.tag],
      security: operation.auth === 'identity' ? [{ identityToken: [] }] : [],
      request: {
        ...(operation.params ? { params: operation.params } : {}),
        ...(operation.query ? { query: operation.query } : {}),
        ...(operation.body ? { body: { required: operation.body.required, content: content([operation.body]) } } : {}),
      },
      responses: Object.fromEntries(
        Object.entries(operation.responses).map(([status, response]) => [
          status,
          { description: response.description, ...(response.content ? { content: content(response.content) } : {}) },
        ]),
      ),
    };
    registry.registerPath(route);
  }
  return new OpenApiGeneratorV31(registry.definitions).generateDocument({
    openapi: '3.1.0',
    info: {
      title: 'jit-broker',
      version: options.version,
      description:
        'A just-in-time credential broker: a verified identity in, a short-lived, task-scoped, signed access token out; high-risk scopes need another person\'s approval; every issuance is recorded in a hash-chained audit log.',
      license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
    },
    servers: [{ url: options.issuer.replace(/\/+$/, '') }],
  });
}
