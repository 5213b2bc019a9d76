/**
 * XenServer / XCP-ng source URIs:
 *
 *   xen://USER@POOL_MASTER[:PORT]/VM[?OPTIONS]     XenAPI over http (default port 80)
 *   xens://USER@POOL_MASTER[:PORT]/VM[?OPTIONS]    over https (default port 443)
 *
 * VM is a name label or a uuid. Options: `ca=FILE` (PEM CAs for xens), `names=device|vdi`
 * (disk names: the VBD device such as `xvda`, the default, or the VDI name label),
 * `transport=auto|nbd|http` (`auto` uses NBD when the pool serves it, else
 * export_raw_vdi over HTTP). The password never appears in the URI: it comes from
 * the environment (`CHUNKVAULT_XEN_PASSWORD`) or the caller's configuration.
 */
import { ChunkvaultError } from '../../engine/errors.js';

export type DiskNaming = 'device' | 'vdi';
export type XenTransport = 'auto' | 'nbd' | 'http';

export interface XenSource {
  readonly https: boolean;
  readonly user: string;
  readonly host: string;
  readonly port: number;
  /** Name label or uuid. */
  readonly vm: string;
  readonly caFile?: string;
  readonly names: DiskNaming;
  readonly transport: XenTransport;
}

export const XEN_PASSWORD_ENV = 'CHUNKVAULT_XEN_PASSWORD';

const SCHEME = /^xens?:\/\//;

/** True for `xen://` and `xens://` sources. */
export function isXenSource(source: string): boolean {
  return SCHEME.test(source);
}

function invalid(uri: string, reason: string): ChunkvaultError {
  return new ChunkvaultError('INVALID_ARGUMENT', `invalid xen source: ${reason}`, { details: { uri: uri.replace(/:[^@/]*@/, ':***@'), reason } });
}

function option<T extends string>(uri: string, params: URLSearchParams, key: string, allowed: readonly T[], fallback: T): T {
  const value = params.get(key);
  if (value === null) return fallback;
  if (!(allowed as readonly string[]).includes(value)) throw invalid(uri, `${key} must be one of ${allowed.join(', ')}`);
  return value as T;
}

/** Parses a `xen://` or `xens://` URI; INVALID_ARGUMENT with `details.reason` otherwise. */
export function parseXenSource(uri: string): XenSource {
  let url: URL;
  try {
    url = new URL(uri);
  } catch (err) {
    throw new ChunkvaultError('INVALID_ARGUMENT', 'invalid xen source: not a URI', { cause: err, details: { reason: 'not a URI' } });
  }
  const https = url.protocol === 'xens:';
  if (!https && url.protocol !== 'xen:') throw invalid(uri, `unsupported scheme ${url.protocol}`);
  if (url.password !== '') throw invalid(uri, `a password in the URI is refused: set ${XEN_PASSWORD_ENV}`);
  if (url.username === '') throw invalid(uri, 'a user is required (xen://USER@HOST/VM)');
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (host === '') throw invalid(uri, 'missing host');
  const vm = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (vm === '' || vm.includes('/')) throw invalid(uri, 'the path must be one VM name or uuid');
  const known = new Set(['ca', 'names', 'transport']);
  for (const key of url.searchParams.keys()) if (!known.has(key)) throw invalid(uri, `unknown option "${key}"`);
  const caFile = url.searchParams.get('ca') ?? undefined;
  if (caFile !== undefined && !https) throw invalid(uri, 'ca= needs xens://');
  return {
    https,
    user: decodeURIComponent(url.username),
    host,
    port: url.port === '' ? (https ? 443 : 80) : Number(url.port),
    vm,
    ...(caFile ? { caFile } : {}),
    names: option(uri, url.searchParams, 'names', ['device', 'vdi'] as const, 'device'),
    transport: option(uri, url.searchParams, 'transport', ['auto', 'nbd', 'http'] as const, 'auto'),
  };
}
