/**
 * Job orchestration: front-end -> engine. Every bad input is rejected before anything
 * is written (the front-end plans, parsing extents and finding the parent, before the
 * index is opened), and the plan is always finished and its source closed.
 */
import {
  backup,
  ChunkvaultError,
  Repository,
  restore,
  validateName,
  type BackupProgress,
  type BackupRequest,
  type PointRecord,
} from '../engine/index.js';
import type { BackupPlan, FrontEnd, VmFrontEnd } from '../adapters/index.js';
import { FileFrontEnd } from '../adapters/file/index.js';
import { isHypervSource, isKvmSource, isNbdUri, isVmwareSource, isXenSource } from '../adapters/schemes.js';
import { openTarget } from './restore-targets.js';

export interface SourceOptions {
  /** A JSON extent list (files and block devices only). */
  readonly changedExtentsFile?: string;
  /** A dirty bitmap name (NBD sources). */
  readonly bitmap?: string;
}

/**
 * Picks the front-end for a source argument: kvm:/kvm+qmp:, an NBD URI, else a file or
 * block device. Only the chosen adapter is loaded (a file backup loads none of the
 * hypervisor clients: about 40 ms of every command's start-up, bench/RESULTS.md).
 */
export async function frontEndFor(source: string, o: SourceOptions = {}): Promise<FrontEnd> {
  if (isXenSource(source)) throw new ChunkvaultError('INVALID_ARGUMENT', 'a xen:// source is a whole VM: name it alone on the command line');
  if (isVmwareSource(source)) throw new ChunkvaultError('INVALID_ARGUMENT', 'a vmware:// source is a whole VM: name it alone on the command line');
  if (isHypervSource(source)) throw new ChunkvaultError('INVALID_ARGUMENT', 'a hyperv:// source is a whole VM: name it alone on the command line');
  if (isKvmSource(source)) {
    // The KVM front-ends own their bitmaps: a user-named bitmap or extent list would bypass that.
    if (o.changedExtentsFile || o.bitmap !== undefined) throw new ChunkvaultError('INVALID_ARGUMENT', '--changed-extents and --bitmap do not apply to kvm: sources (they manage their own bitmaps)');
    return (await import('../adapters/kvm/index.js')).kvmFrontEnd(source);
  }
  if (isNbdUri(source)) {
    if (o.changedExtentsFile) throw new ChunkvaultError('INVALID_ARGUMENT', '--changed-extents applies to files and block devices; use --bitmap with NBD');
    const { NbdFrontEnd } = await import('../adapters/nbd/index.js');
    return new NbdFrontEnd(source, o.bitmap === undefined ? {} : { bitmap: o.bitmap });
  }
  if (o.bitmap !== undefined) throw new ChunkvaultError('INVALID_ARGUMENT', '--bitmap applies to NBD sources (nbd://, nbd+unix://, nbds://)');
  const vdisk = VIRTUAL_DISK.exec(source);
  if (vdisk) {
    // Chosen by prefix or extension, never by probing contents: a raw disk may end in a VHD footer.
    const path = vdisk[2] ?? source;
    const { openVirtualDisk } = await import('../adapters/hyperv/index.js');
    return new FileFrontEnd(path, o.changedExtentsFile, (p) => openVirtualDisk(p));
  }
  return new FileFrontEnd(source, o.changedExtentsFile);
}

/** `vhd:PATH`, `vhdx:PATH`, or a path ending in .vhd, .vhdx, .avhd or .avhdx. */
const VIRTUAL_DISK = /^(vhdx?:)(.+)$|\.a?vhdx?$/i;

/** A source that names a whole VM (`xen://`, `xens://`, `hyperv://`, `vmware://`), else null. */
export async function vmFrontEndFor(source: string, o: SourceOptions = {}): Promise<VmFrontEnd | null> {
  if (isVmwareSource(source)) {
    if (o.changedExtentsFile || o.bitmap !== undefined) throw new ChunkvaultError('INVALID_ARGUMENT', '--changed-extents and --bitmap do not apply to vmware:// sources (they use vSphere changed block tracking)');
    return new (await import('../adapters/vmware/index.js')).VmwareVmFrontEnd(source);
  }
  if (isHypervSource(source)) {
    if (o.changedExtentsFile || o.bitmap !== undefined) throw new ChunkvaultError('INVALID_ARGUMENT', '--changed-extents and --bitmap do not apply to hyperv:// sources (they use resilient change tracking)');
    return new (await import('../adapters/hyperv/index.js')).HypervVmFrontEnd(source);
  }
  if (!isXenSource(source)) return null;
  if (o.changedExtentsFile || o.bitmap !== undefined) throw new ChunkvaultError('INVALID_ARGUMENT', '--changed-extents and --bitmap do not apply to xen:// sources (they use XenAPI changed block tracking)');
  return new (await import('../adapters/xen/index.js')).XenVmFrontEnd(source);
}

export interface BackupJobOptions {
  readonly repo: Repository;
  readonly frontEnd: FrontEnd;
  readonly vm: string;
  readonly disk?: string;
  readonly full?: boolean;
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: BackupProgress) => void;
}

/** The engine request for one disk of a front-end's plan. */
export function requestFromPlan(
  plan: BackupPlan,
  where: { vm: string; disk: string; parent: PointRecord | null; job?: string },
  o: { signal?: AbortSignal; onProgress?: (p: BackupProgress) => void },
): BackupRequest {
  return {
    source: plan.source,
    ...where,
    base: plan.base,
    changeToken: plan.changeToken,
    ...(plan.changed ? { changed: plan.changed } : {}),
    ...(plan.meta ? { meta: plan.meta } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.onProgress ? { onProgress: o.onProgress } : {}),
  };
}

/**
 * Backs up one disk: resolves the previous point, lets the front-end plan, runs the
 * engine, and always calls the plan's `finish` (which releases snapshots and exports)
 * and closes the source.
 */
export async function runBackupJob(o: BackupJobOptions): Promise<PointRecord> {
  const disk = validateName('disk', o.disk ?? o.frontEnd.diskName);
  validateName('vm', o.vm);
  const parent = (await o.repo.catalog.latest(o.vm, disk)) ?? null;
  const plan = await o.frontEnd.plan({ parent, forceFull: o.full ?? false, ...(o.signal ? { signal: o.signal } : {}) });
  let committed = false;
  try {
    const point = await backup(o.repo, requestFromPlan(plan, { vm: o.vm, disk, parent }, o));
    committed = true;
    return point;
  } finally {
    try {
      await plan.finish(committed);
    } finally {
      await plan.source.close();
    }
  }
}

/** Convenience for files: `frontEndFor` + `runBackupJob`. */
export async function runFileBackup(o: Omit<BackupJobOptions, 'frontEnd'> & { source: string; changedExtentsFile?: string }): Promise<PointRecord> {
  const frontEnd = await frontEndFor(o.source, o.changedExtentsFile === undefined ? {} : { changedExtentsFile: o.changedExtentsFile });
  return runBackupJob({ ...o, frontEnd });
}

export interface RestoreJobOptions {
  readonly repo: Repository;
  readonly point: PointRecord;
  readonly output: string;
  readonly signal?: AbortSignal;
  readonly verifyDigest?: boolean;
  /** Write through the page cache instead of direct I/O (see FileTargetOptions). */
  readonly buffered?: boolean;
  readonly onProgress?: (p: { done: number; total: number }) => void;
}

/** Restores a point to a file, block device or `-` (stdout). */
export async function runRestore(o: RestoreJobOptions): Promise<void> {
  const target = await openTarget(o.output, { direct: !o.buffered });
  await restore(o.repo, o.point, target, {
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.onProgress ? { onProgress: o.onProgress } : {}),
    verifyDigest: o.verifyDigest ?? false,
  });
}
