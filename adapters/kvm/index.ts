/**
 * The QEMU/KVM front-ends: qcow2 images at rest (`kvm:PATH`) and disks of running VMs
 * over QMP (`kvm+qmp:SOCKET?node=NODE`). Both own the disk's persistent dirty bitmaps
 * (named `cv-...`, the name stored as each point's changeToken) so that incremental
 * forever never loses a change: see bitmaps.ts for the life cycle, at-rest.ts and
 * live.ts for each flow. Everything else in this folder is internal.
 *
 * Error codes callers may see (all `ChunkvaultError`), besides the NBD client's:
 * - INVALID_ARGUMENT: a malformed source, or an image that is not qcow2.
 * - SOURCE_NOT_FOUND: no image at the path, or no such block node in the VM.
 * - SOURCE_READ_FAILED: qemu-img or qemu-nbd failed (`details: {tool, exitCode, stderr}`),
 *   e.g. the image is locked by a running VM.
 * - IO_ERROR: qemu-img / qemu-nbd not installed.
 * - CONNECT_FAILED / TIMEOUT / PROTOCOL_ERROR: the QMP socket cannot be reached,
 *   does not answer, or does not speak QMP.
 * - REMOTE_ERROR: QEMU refused a QMP command (`details: {command, qmpClass}`), or the
 *   parent's bitmap is busy.
 *
 * A missing or inconsistent bitmap is not an error: the backup reads all allocated
 * data and records why in the point's `meta.fullReason`.
 */
export { KvmImageFrontEnd, type KvmImageFrontEndOptions } from './at-rest.js';
export { KvmQmpFrontEnd, type KvmQmpFrontEndOptions } from './live.js';
export { BITMAP_PREFIX, decide, isOurs, newBitmapName, type BitmapDecision, type BitmapView } from './bitmaps.js';
export { isKvmSource, kvmFrontEnd } from './source.js';
export { QmpClient, type QmpEvent, type QmpOptions } from './qmp.js';
export type { KvmFrontEndOptions } from './_common.js';
