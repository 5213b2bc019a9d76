/**
 * Source arguments of the KVM front-ends:
 *
 *   kvm:PATH[?connections=N]                       a qcow2 image at rest
 *   kvm+qmp:QMP_SOCKET?node=NODE[&nbd=SOCKET][&fleece-dir=DIR][&connections=N]
 *                                                  a disk of a running VM
 *
 * PATH and QMP_SOCKET are file paths (`kvm:/var/lib/vm/disk.qcow2`; `kvm:///abs`
 * works too); a path containing `?` cannot be written. NODE is the `node-name` of the
 * disk's format (qcow2) node. `nbd` names the unix socket of an NBD server the VM
 * already runs (QEMU runs one at most); without it the front-end starts its own on a
 * private socket and stops it after. `fleece-dir` is where the fleece overlay lives
 * (default: a private temp directory). An unknown key is INVALID_ARGUMENT.
 */
import { ChunkvaultError } from '../../engine/index.js';
import type { FrontEnd } from '../front-end.js';
import { KvmImageFrontEnd } from './at-rest.js';
import { KvmQmpFrontEnd } from './live.js';
import type { KvmFrontEndOptions } from './_common.js';
import { isKvmSource } from '../schemes.js';

export { isKvmSource };

function splitSource(source: string, scheme: string, allowed: readonly string[]): { path: string; query: URLSearchParams } {
  const rest = source.slice(scheme.length);
  const q = rest.indexOf('?');
  let path = q >= 0 ? rest.slice(0, q) : rest;
  if (path.startsWith('//')) path = path.slice(2);
  const query = new URLSearchParams(q >= 0 ? rest.slice(q + 1) : '');
  if (!path) throw new ChunkvaultError('INVALID_ARGUMENT', `${scheme} source needs a path: ${source}`, { details: { source } });
  for (const key of query.keys()) {
    if (!allowed.includes(key)) {
      throw new ChunkvaultError('INVALID_ARGUMENT', `unknown option "${key}" in ${scheme} source (allowed: ${allowed.join(', ') || 'none'})`, { details: { source, key } });
    }
  }
  return { path, query };
}

function connectionsOf(query: URLSearchParams, source: string): { connections?: number } {
  const text = query.get('connections');
  if (text === null) return {};
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 16) throw new ChunkvaultError('INVALID_ARGUMENT', `connections must be an integer from 1 to 16 in ${source}`, { details: { source } });
  return { connections: n };
}

/** The front-end for a `kvm:` or `kvm+qmp:` source (see the module comment). */
export function kvmFrontEnd(source: string, options: KvmFrontEndOptions = {}): FrontEnd {
  if (source.startsWith('kvm+qmp:')) {
    const { path, query } = splitSource(source, 'kvm+qmp:', ['node', 'nbd', 'fleece-dir', 'connections']);
    const node = query.get('node');
    if (!node) throw new ChunkvaultError('INVALID_ARGUMENT', `kvm+qmp: source needs ?node=NODE (the disk's block node name): ${source}`, { details: { source } });
    const nbd = query.get('nbd');
    const fleeceDir = query.get('fleece-dir');
    return new KvmQmpFrontEnd(path, {
      ...options,
      ...connectionsOf(query, source),
      node,
      ...(nbd ? { nbdSocket: nbd } : {}),
      ...(fleeceDir ? { fleeceDir } : {}),
    });
  }
  if (source.startsWith('kvm:')) {
    const { path, query } = splitSource(source, 'kvm:', ['connections']);
    return new KvmImageFrontEnd(path, { ...options, ...connectionsOf(query, source) });
  }
  throw new ChunkvaultError('INVALID_ARGUMENT', `not a kvm: or kvm+qmp: source: ${source}`, { details: { source } });
}
