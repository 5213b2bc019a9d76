/**
 * Whole-VM backup jobs: one consistent view of every disk (the front-end's snapshot or
 * checkpoint), one point per disk, and a VM record that commits them together. The
 * front-end's disk plans and VM plan are always finished (snapshots released), in that
 * order, whether the job committed or not.
 */
import {
  backup,
  ChunkvaultError,
  discardJob,
  newJobId,
  validateName,
  type BackupProgress,
  type PointRecord,
  type Repository,
  type VmBackupRecord,
} from '../engine/index.js';
import type { VmBackupPlan, VmFrontEnd } from '../adapters/index.js';
import { requestFromPlan } from './jobs.js';

export interface VmBackupJobOptions {
  readonly repo: Repository;
  readonly frontEnd: VmFrontEnd;
  readonly vm?: string;
  readonly full?: boolean;
  readonly signal?: AbortSignal;
  readonly onProgress?: (disk: string, p: BackupProgress) => void;
}

export interface VmBackupResult {
  readonly record: VmBackupRecord;
  readonly points: PointRecord[];
}

/** Backs up every disk of a VM as one job; resolves once the VM record is committed. */
export async function runVmBackupJob(o: VmBackupJobOptions): Promise<VmBackupResult> {
  const vm = validateName('vm', o.vm ?? o.frontEnd.vmName);
  const parentOf = async (disk: string) => (await o.repo.catalog.latest(vm, disk)) ?? null;
  const plan = await o.frontEnd.plan({ parentOf, forceFull: o.full ?? false, ...(o.signal ? { signal: o.signal } : {}) });
  const job = newJobId();
  const points: PointRecord[] = [];
  let committed = false;
  // One session for the whole job: its points are invisible until the VM record, and
  // GC must keep their chunks until then (engine/sessions.ts).
  const session = await o.repo.beginSession('backup', job);
  try {
    checkDiskNames(plan);
    for (const { disk, plan: diskPlan } of plan.disks) {
      const parent = await parentOf(disk);
      const onProgress = o.onProgress ? (p: BackupProgress) => o.onProgress!(disk, p) : undefined;
      const request = requestFromPlan(diskPlan, { vm, disk, parent, job }, { ...(o.signal ? { signal: o.signal } : {}), ...(onProgress ? { onProgress } : {}) });
      points.push(await backup(o.repo, request));
    }
    if (o.signal?.aborted) throw new ChunkvaultError('INTERRUPTED', 'backup interrupted');
    const record: VmBackupRecord = {
      id: job,
      vm,
      time: new Date().toISOString(),
      disks: points.map((p) => ({ disk: p.disk, point: p.id })),
      ...(plan.config !== undefined ? { config: plan.config } : {}),
      ...(plan.meta ? { meta: plan.meta } : {}),
    };
    await o.repo.catalog.commitVmBackup(record);
    committed = true;
    return { record, points };
  } catch (err) {
    await discardJob(o.repo, points.map((p) => p.id)).catch(() => undefined);
    throw err;
  } finally {
    await session.end();
    await finishAll(plan, committed);
  }
}

function checkDiskNames(plan: VmBackupPlan): void {
  const seen = new Set<string>();
  for (const { disk } of plan.disks) {
    validateName('disk', disk);
    if (seen.has(disk)) throw new ChunkvaultError('INVALID_ARGUMENT', `two disks are named "${disk}": give each a distinct name`);
    seen.add(disk);
  }
}

/** Finishes every disk plan, closes every source, then finishes the VM plan; never throws. */
async function finishAll(plan: VmBackupPlan, committed: boolean): Promise<void> {
  for (const { plan: d } of plan.disks) {
    await d.finish(committed).catch(() => undefined);
    await d.source.close().catch(() => undefined);
  }
  await plan.finish(committed).catch(() => undefined);
}
