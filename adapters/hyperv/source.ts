/**
 * Hyper-V source URIs:
 *
 *   hyperv://USER@HOST[:PORT]/VM[?OPTIONS]
 *
 * VM is an ElementName (the name Hyper-V Manager shows) or the VM's GUID (its `Name`).
 * WinRM over HTTP on 5985 by default; `https=1` uses HTTPS on 5986. Options:
 * - `map=HOSTPREFIX=LOCALPREFIX` (repeatable): how a disk path on the host is read
 *   here, e.g. `map=C:\VMs=/mnt/vms` for a share of C:\VMs mounted at /mnt/vms.
 *   The longest matching prefix wins; host prefixes match case-insensitively.
 * - `consistency=application|crash`: the checkpoint's ConsistencyLevel (1, through VSS
 *   in the guest, is the default; 2 is crash-consistent).
 * - `insecure=1` (with https=1): accept WinRM's self-signed certificate.
 * - `auth=basic|ntlm`: Basic (the default) or NTLMv2 (domain accounts as `DOMAIN%5Cuser`
 *   or `user%40domain`); NTLM here authenticates only, so use it with https=1.
 * The password never appears in the URI: it comes from `CHUNKVAULT_HYPERV_PASSWORD`
 * or the caller's configuration.
 */
import { ChunkvaultError } from '../../engine/errors.js';

export const HYPERV_PASSWORD_ENV = 'CHUNKVAULT_HYPERV_PASSWORD';

export interface PathMapping {
  /** Host prefix, backslash-separated, without a trailing separator. */
  readonly host: string;
  readonly local: string;
}

export interface HypervSource {
  readonly https: boolean;
  readonly insecure: boolean;
  readonly user: string;
  readonly host: string;
  readonly port: number;
  readonly vm: string;
  readonly consistency: 'application' | 'crash';
  readonly auth: 'basic' | 'ntlm';
  readonly map: readonly PathMapping[];
}

const SCHEME = /^hyperv:\/\//i;

/** True for `hyperv://` sources. */
export function isHypervSource(source: string): boolean {
  return SCHEME.test(source);
}

function invalid(reason: string): ChunkvaultError {
  return new ChunkvaultError('INVALID_ARGUMENT', `invalid hyperv source: ${reason}`, { details: { reason } });
}

function flag(params: URLSearchParams, key: string): boolean {
  const v = params.get(key);
  if (v === null || v === '0' || v === 'false') return false;
  if (v === '1' || v === 'true' || v === '') return true;
  throw invalid(`${key} must be 1 or 0`);
}

function parseMapping(entry: string): PathMapping {
  const eq = entry.indexOf('=');
  if (eq <= 0 || eq === entry.length - 1) throw invalid(`map=${entry} is not HOSTPREFIX=LOCALPREFIX`);
  const host = entry.slice(0, eq).replace(/\//g, '\\').replace(/\\+$/, '');
  const local = entry.slice(eq + 1).replace(/\/+$/, '') || '/';
  return { host, local };
}

/** Parses a `hyperv://` URI; INVALID_ARGUMENT with `details.reason` otherwise. */
export function parseHypervSource(uri: string): HypervSource {
  let url: URL;
  try {
    url = new URL(uri);
  } catch (err) {
    throw new ChunkvaultError('INVALID_ARGUMENT', 'invalid hyperv source: not a URI', { cause: err, details: { reason: 'not a URI' } });
  }
  if (url.protocol !== 'hyperv:') throw invalid(`unsupported scheme ${url.protocol}`);
  if (url.password !== '') throw invalid(`a password in the URI is refused: set ${HYPERV_PASSWORD_ENV}`);
  if (url.username === '') throw invalid('a user is required (hyperv://USER@HOST/VM)');
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (host === '') throw invalid('missing host');
  const vm = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (vm === '' || vm.includes('/')) throw invalid('the path must be one VM name or GUID');
  const known = new Set(['map', 'consistency', 'https', 'insecure', 'auth']);
  for (const key of url.searchParams.keys()) if (!known.has(key)) throw invalid(`unknown option "${key}"`);
  const consistency = url.searchParams.get('consistency') ?? 'application';
  if (consistency !== 'application' && consistency !== 'crash') throw invalid('consistency must be application or crash');
  const auth = url.searchParams.get('auth') ?? 'basic';
  if (auth !== 'basic' && auth !== 'ntlm') throw invalid('auth must be basic or ntlm');
  const https = flag(url.searchParams, 'https');
  const insecure = flag(url.searchParams, 'insecure');
  if (insecure && !https) throw invalid('insecure=1 needs https=1');
  return {
    https,
    insecure,
    user: decodeURIComponent(url.username),
    host,
    port: url.port === '' ? (https ? 5986 : 5985) : Number(url.port),
    vm,
    consistency,
    auth,
    map: url.searchParams.getAll('map').map(parseMapping),
  };
}

/**
 * The local path of a disk path on the host: the longest `map` prefix (at a separator
 * boundary, case-insensitive) replaced, backslashes turned into slashes. A Windows path
 * no mapping covers is INVALID_ARGUMENT (reading it here could only fail later).
 */
export function mapHostPath(hostPath: string, map: readonly PathMapping[]): string {
  const norm = hostPath.replace(/\//g, '\\');
  let best: PathMapping | null = null;
  for (const m of map) {
    const prefix = m.host.toLowerCase();
    const lower = norm.toLowerCase();
    const boundary = lower.length === prefix.length || lower[prefix.length] === '\\';
    if (lower.startsWith(prefix) && boundary && (best === null || m.host.length > best.host.length)) best = m;
  }
  if (best === null) {
    if (/^[a-zA-Z]:\\|^\\\\/.test(norm)) {
      throw new ChunkvaultError('INVALID_ARGUMENT', `no map= option covers the host path ${hostPath}`, { details: { path: hostPath, reason: 'unmapped host path' } });
    }
    return hostPath;
  }
  const rest = norm.slice(best.host.length).replace(/\\/g, '/');
  return `${best.local === '/' ? '' : best.local}${rest.startsWith('/') ? rest : `/${rest}`}`;
}
