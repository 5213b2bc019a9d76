/**
 * Which front-end a source argument names, decided by its prefix alone. A light entry
 * point of this folder (besides index.ts): it loads no front-end, so a command can pick
 * one and load only that (src/jobs.ts), keeping every command's start-up short.
 */
export { isXenSource } from './xen/source.js';
export { isVmwareSource } from './vmware/source.js';
export { isHypervSource } from './hyperv/source.js';

const KVM_SCHEME = /^kvm(\+qmp)?:/;
const NBD_SCHEME = /^nbds?(\+unix)?:\/\//;

/** True for `kvm:` and `kvm+qmp:` sources. */
export function isKvmSource(source: string): boolean {
  return KVM_SCHEME.test(source);
}

/** True for NBD URIs: `nbd://`, `nbds://`, `nbd+unix://`, `nbds+unix://`. */
export function isNbdUri(source: string): boolean {
  return NBD_SCHEME.test(source);
}
