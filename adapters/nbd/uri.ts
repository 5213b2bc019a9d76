/**
 * NBD URIs as qemu and nbdinfo write them.
 *
 *   nbd://HOST[:PORT]/EXPORT                  TCP, default port 10809
 *   nbds://HOST[:PORT]/EXPORT                 TCP + TLS
 *   nbd+unix:///EXPORT?socket=PATH            unix socket
 *   nbds+unix:///EXPORT?socket=PATH           unix socket + TLS
 *
 * Terms:
 * - export: the path after the first `/`, percent-decoded; empty selects the server's
 *   default export. IPv6 hosts are written in brackets (`nbd://[::1]/x`).
 * - TLS query options (only with `nbds`): `tls-ca=FILE` (PEM CAs), `tls-pin=sha256:HEX`
 *   (the server certificate's SHA-256, colons allowed), `tls-hostname=NAME` (the name to
 *   verify instead of the host).
 *
 * Anything else (unknown schemes or query keys, user info, a port out of range, a unix
 * URI with a host or without `socket`) is INVALID_ARGUMENT: a misspelt TLS option must
 * never silently weaken verification.
 */
import { ChunkvaultError } from '../../engine/errors.js';
import { DEFAULT_PORT } from './protocol.js';
import type { TlsSettings } from './tls.js';

export type NbdAddress =
  | { readonly transport: 'tcp'; readonly host: string; readonly port: number }
  | { readonly transport: 'unix'; readonly path: string };

/** Where an export lives and how to reach it. */
export interface NbdUri {
  readonly address: NbdAddress;
  readonly exportName: string;
  /** Null for plain `nbd` URIs. */
  readonly tls: TlsSettings | null;
}

const SCHEMES: Readonly<Record<string, { transport: 'tcp' | 'unix'; tls: boolean }>> = {
  'nbd:': { transport: 'tcp', tls: false },
  'nbds:': { transport: 'tcp', tls: true },
  'nbd+tcp:': { transport: 'tcp', tls: false },
  'nbds+tcp:': { transport: 'tcp', tls: true },
  'nbd+unix:': { transport: 'unix', tls: false },
  'nbds+unix:': { transport: 'unix', tls: true },
};

const TLS_KEYS = new Set(['tls-ca', 'tls-pin', 'tls-hostname']);

function invalid(uri: string, reason: string): ChunkvaultError {
  return new ChunkvaultError('INVALID_ARGUMENT', `invalid NBD URI: ${reason}`, { details: { uri, reason } });
}

function parseUrl(uri: string): URL {
  try {
    return new URL(uri);
  } catch (err) {
    throw new ChunkvaultError('INVALID_ARGUMENT', 'invalid NBD URI: not a URI', { cause: err, details: { uri } });
  }
}

function decode(uri: string, text: string, what: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw invalid(uri, `bad percent-encoding in the ${what}`);
  }
}

/**
 * Single-valued query parameters; duplicates and unknown keys are refused. Parsed by
 * hand because form decoding would turn `+` in a socket path into a space.
 */
function queryParams(uri: string, url: URL): Map<string, string> {
  const params = new Map<string, string>();
  const query = url.search.replace(/^\?/, '');
  for (const pair of query === '' ? [] : query.split('&')) {
    const eq = pair.indexOf('=');
    const key = decode(uri, eq < 0 ? pair : pair.slice(0, eq), 'query');
    const value = decode(uri, eq < 0 ? '' : pair.slice(eq + 1), 'query');
    if (key !== 'socket' && !TLS_KEYS.has(key)) throw invalid(uri, `unknown query parameter "${key}"`);
    if (params.has(key)) throw invalid(uri, `query parameter "${key}" given twice`);
    params.set(key, value);
  }
  return params;
}

/** `sha256:AB:CD...` or `sha256:abcd...` to 64 lower-case hex digits. */
function parsePin(uri: string, text: string): string {
  const match = /^sha256:([0-9a-fA-F:]+)$/.exec(text);
  const hex = match ? (match[1] as string).replace(/:/g, '').toLowerCase() : '';
  if (!/^[0-9a-f]{64}$/.test(hex)) throw invalid(uri, 'tls-pin must be sha256: followed by 64 hex digits');
  return hex;
}

function parseTls(uri: string, params: Map<string, string>, tls: boolean): TlsSettings | null {
  const keys = [...params.keys()].filter((key) => TLS_KEYS.has(key));
  if (!tls) {
    if (keys.length > 0) throw invalid(uri, `${keys.join(', ')} needs a TLS scheme (nbds://)`);
    return null;
  }
  const caFile = params.get('tls-ca');
  const pin = params.get('tls-pin');
  const hostname = params.get('tls-hostname');
  if (caFile === '' || hostname === '') throw invalid(uri, 'empty TLS option');
  return {
    ...(caFile === undefined ? {} : { caFile }),
    ...(pin === undefined ? {} : { pinSha256: parsePin(uri, pin) }),
    ...(hostname === undefined ? {} : { hostname }),
  };
}

function parseAddress(uri: string, url: URL, transport: 'tcp' | 'unix', params: Map<string, string>): NbdAddress {
  if (transport === 'unix') {
    if (url.host !== '') throw invalid(uri, 'a unix URI has no host (write nbd+unix:///export?socket=PATH)');
    const path = params.get('socket');
    if (!path) throw invalid(uri, 'a unix URI needs ?socket=PATH');
    return { transport, path };
  }
  if (params.has('socket')) throw invalid(uri, 'socket= is only valid with a +unix scheme');
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : decode(uri, url.hostname, 'host');
  if (host === '') throw invalid(uri, 'missing host');
  const port = url.port === '' ? DEFAULT_PORT : Number(url.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid(uri, `port ${url.port} out of range`);
  return { transport, host, port };
}

/**
 * The export path exactly as written: the URL parser would drop `.` and `..` segments
 * (also spelt `%2e`), but an export may be named so.
 */
function rawExportPath(uri: string): string {
  const afterScheme = uri.slice(uri.indexOf('://') + 3);
  const end = afterScheme.search(/[?#]/);
  const authorityAndPath = end < 0 ? afterScheme : afterScheme.slice(0, end);
  const slash = authorityAndPath.indexOf('/');
  return slash < 0 ? '' : authorityAndPath.slice(slash + 1);
}

/** Parses an NBD URI; throws INVALID_ARGUMENT with `details.reason`. */
export function parseNbdUri(uri: string): NbdUri {
  if (typeof uri !== 'string' || uri.trim() !== uri || uri === '') throw invalid(String(uri), 'empty or padded');
  const url = parseUrl(uri);
  const scheme = SCHEMES[url.protocol];
  if (!scheme) throw invalid(uri, `unsupported scheme "${url.protocol.slice(0, -1)}"`);
  if (url.username !== '' || url.password !== '') throw invalid(uri, 'user info is not supported');
  if (url.hash !== '') throw invalid(uri, 'a fragment is not allowed');
  const params = queryParams(uri, url);
  const address = parseAddress(uri, url, scheme.transport, params);
  const exportName = decode(uri, rawExportPath(uri), 'export name');
  return { address, exportName, tls: parseTls(uri, params, scheme.tls) };
}

function encodeExport(name: string): string {
  return name.split('/').map(encodeURIComponent).join('/');
}

/** The URI of `target` without its TLS options (for logs and `describe()`). */
export function formatNbdUri(target: NbdUri): string {
  const scheme = target.tls ? 'nbds' : 'nbd';
  const exportPath = encodeExport(target.exportName);
  const { address } = target;
  if (address.transport === 'unix') {
    return `${scheme}+unix:///${exportPath}?socket=${encodeURIComponent(address.path)}`;
  }
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  const port = address.port === DEFAULT_PORT ? '' : `:${address.port}`;
  return `${scheme}://${host}${port}/${exportPath}`;
}
