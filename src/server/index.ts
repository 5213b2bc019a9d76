/**
 * The media agent: an authenticated HTTP API that other backup tools send disk data
 * to (docs/media-agent.md). `startServer` serves a repository; `TokenStore` manages
 * the API tokens.
 */
export { startServer } from './server.js';
export type { ServeOptions, RunningServer } from './server.js';
export { TokenStore, parseScopes, SCOPES, TENANT_RE } from './tokens.js';
export type { Principal, Scope, TokenRecord } from './tokens.js';
export { engineVm, tenantVm } from './tenancy.js';
export type { TenantPoint } from './tenancy.js';
export { parseRange } from './routes.js';
