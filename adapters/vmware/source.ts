/**
 * VMware source URIs:
 *
 *   vmware://USER@HOST[:PORT]/PATH/TO/VM[?OPTIONS]
 *
 * PATH is an inventory path (`DC0/vm/web01`), a VM name (`web01`) or a managed object
 * id (`vm-42`). Options: `transport=` a comma-separated order to try among `san`
 * (alias `hotadd`), `nbd` and `http` (default `http`), `san=DIR` (a local directory holding the datastores as
 * `DIR/<datastore>/<path>`, for SAN / hot-add style access), `nbd=URI` (an NBD server
 * exporting the disk; `{disk}` in it is replaced by the disk's file name), `quiesce=1`,
 * `insecure=1` (no certificate check), `thumbprint=SHA256` (pin the host certificate),
 * `http=1` (plain http, for simulators), `dc=NAME` (the datacenter for /folder reads).
 * The password comes from the caller, CHUNKVAULT_VMWARE_PASSWORD, or the first line of the
 * file CHUNKVAULT_VMWARE_PASSWORD_FILE names; never from the URI.
 */
import { ChunkvaultError } from '../../engine/errors.js';

export type VmwareTransport = 'san' | 'nbd' | 'http';

export interface VmwareSource {
  readonly user: string;
  readonly host: string;
  readonly port: number;
  readonly https: boolean;
  /** Inventory path, name or moref value. */
  readonly vm: string;
  readonly transports: readonly VmwareTransport[];
  readonly sanDir?: string;
  readonly nbdUri?: string;
  readonly quiesce: boolean;
  readonly insecure: boolean;
  readonly thumbprint?: string;
  readonly datacenter?: string;
}

export const VMWARE_PASSWORD_ENV = 'CHUNKVAULT_VMWARE_PASSWORD';
/** A file holding the password (its first line), for credentials kept in a config file. */
export const VMWARE_PASSWORD_FILE_ENV = 'CHUNKVAULT_VMWARE_PASSWORD_FILE';

/** True for `vmware://` sources. */
export function isVmwareSource(source: string): boolean {
  return source.startsWith('vmware://');
}

function invalid(reason: string): ChunkvaultError {
  return new ChunkvaultError('INVALID_ARGUMENT', `invalid vmware source: ${reason}`, { details: { reason } });
}

const KNOWN = new Set(['transport', 'san', 'nbd', 'quiesce', 'insecure', 'thumbprint', 'http', 'dc']);
const flag = (p: URLSearchParams, k: string): boolean => p.get(k) === '1' || p.get(k) === 'true';

/** Rejects unknown options and transports; the transport order. */
function checkOptions(p: URLSearchParams): VmwareTransport[] {
  for (const key of p.keys()) if (!KNOWN.has(key)) throw invalid(`unknown option "${key}"`);
  // hot-add mounts the snapshot disk on a backup appliance: to us, a local path like SAN.
  const transports = (p.get('transport') ?? 'http').split(',').map((t) => (t === 'hotadd' ? 'san' : t));
  for (const t of transports) if (!['san', 'nbd', 'http'].includes(t)) throw invalid(`transport must be a list of san, nbd, http (got "${t}")`);
  if (transports.includes('san') && !p.get('san')) throw invalid('transport san needs san=DIR');
  if (transports.includes('nbd') && !p.get('nbd')) throw invalid('transport nbd needs nbd=URI');
  return transports as VmwareTransport[];
}

/** Parses a `vmware://` URI; INVALID_ARGUMENT with `details.reason` otherwise. */
export function parseVmwareSource(uri: string): VmwareSource {
  let url: URL;
  try {
    url = new URL(uri);
  } catch (err) {
    throw new ChunkvaultError('INVALID_ARGUMENT', 'invalid vmware source: not a URI', { cause: err, details: { reason: 'not a URI' } });
  }
  if (url.protocol !== 'vmware:') throw invalid(`unsupported scheme ${url.protocol}`);
  if (url.password !== '') throw invalid(`a password in the URI is refused: set ${VMWARE_PASSWORD_ENV}`);
  if (url.username === '') throw invalid('a user is required (vmware://USER@HOST/VM)');
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (host === '') throw invalid('missing host');
  const vm = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (vm === '') throw invalid('missing VM path, name or id');
  const p = url.searchParams;
  const transports = checkOptions(p);
  const https = !flag(p, 'http');
  return {
    user: decodeURIComponent(url.username),
    host,
    port: url.port === '' ? (https ? 443 : 80) : Number(url.port),
    https,
    vm,
    transports,
    ...(p.get('san') ? { sanDir: p.get('san')! } : {}),
    ...(p.get('nbd') ? { nbdUri: p.get('nbd')! } : {}),
    quiesce: flag(p, 'quiesce'),
    insecure: flag(p, 'insecure'),
    ...(p.get('thumbprint') ? { thumbprint: p.get('thumbprint')! } : {}),
    ...(p.get('dc') ? { datacenter: p.get('dc')! } : {}),
  };
}
