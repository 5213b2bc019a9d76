/**
 * Forget: removes points from the catalog, chosen by a retention policy
 * (engine/retention.ts) or named by id. Forget deletes catalog records only (point
 * records, and the disk entries of VM records); it never deletes point maps or
 * containers. GC later removes maps no record names and chunks no map references.
 *
 * Why only records: a point is a record plus its map (FORMAT.md "Commit order"), and a
 * backup running now may be reading a forgotten point's map as its parent. Deleting the
 * record is one atomic unlink, so forget needs no index lock and runs beside backups,
 * restores and verifies. Forgets run one at a time (`locks/forget.lock`), because two of
 * them rewriting the same VM record at once could each drop the other's change.
 *
 * Order of writes (a crash may stop forget between any two of them):
 *
 *   1. every VM record that lists a removed point is rewritten without it (tmp +
 *      fsync + rename + directory fsync), or deleted when no disk remains;
 *   2. then the removed points' records are deleted, each followed by a directory fsync.
 *
 * So a visible VM record never lists a point whose record is gone: restoring a VM
 * backup always finds every disk it names. A crash between 1 and 2 leaves removed
 * points that still have their records: a point whose VM record was rewritten stays
 * visible and complete (its map is untouched) and a re-run of the forget removes it; a
 * point whose VM record was deleted becomes an uncommitted job point, invisible, which
 * GC removes like the leftovers of a failed job. Either way no visible point refers to
 * anything missing. (The other order, records first, could leave a VM record naming a
 * deleted point until the next forget: restoring that VM backup would fail.)
 */
import { promises as fsp } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { PointRecord, VmBackupRecord } from './catalog.js';
import { ChunkvaultError, isChunkvaultError } from './errors.js';
import type { Repository } from './repository.js';
import { applyRetention, validatePolicy, type KeptPoint, type RetentionGroup, type RetentionPolicy } from './retention.js';

export interface ForgetRequest {
  /** Only points of this VM (and, with `disk`, this disk) are considered. */
  readonly vm?: string;
  readonly disk?: string;
  /** Keep rules; every considered point that no rule keeps is removed. */
  readonly policy?: RetentionPolicy;
  /** Point ids or unique prefixes (4+ chars), or VM backup (job) ids, to remove instead of a policy. */
  readonly points?: readonly string[];
  /** The time keep-within counts back from; default the current time. */
  readonly now?: Date | number;
  /** Decide and report, change nothing. */
  readonly dryRun?: boolean;
}

/** One (vm, disk): what is kept (with reasons) and what is (or would be) removed, newest first. */
export type ForgetGroup = RetentionGroup<PointRecord>;

export interface ForgetResult {
  readonly dryRun: boolean;
  readonly groups: readonly ForgetGroup[];
  /** Point records deleted (0 for a dry run). */
  readonly removed: number;
  /** VM records rewritten without removed disks, and deleted for lack of any disk (for a dry run: that would be). */
  readonly vmBackups: { readonly replaced: readonly string[]; readonly deleted: readonly string[] };
}

/** Reason given for the kept points of a disk when points are named by id. */
export const NOT_NAMED = 'not named';

/**
 * Decides what `request` removes, without changing anything. Exactly one of `policy`
 * and `points` must be given (USAGE otherwise); named points must exist within the
 * vm/disk scope (POINT_NOT_FOUND, POINT_AMBIGUOUS).
 */
export async function planForget(repo: Repository, request: ForgetRequest): Promise<ForgetGroup[]> {
  const scope = { ...(request.vm !== undefined ? { vm: request.vm } : {}), ...(request.disk !== undefined ? { disk: request.disk } : {}) };
  const named = request.points ?? [];
  if (named.length > 0 && request.policy && Object.values(request.policy).some((v) => v !== undefined)) {
    throw new ChunkvaultError('USAGE', 'give point ids or keep rules, not both');
  }
  if (named.length === 0) {
    validatePolicy(request.policy ?? {});
    return applyRetention(await repo.catalog.list(scope), request.policy!, request.now ?? Date.now());
  }
  const remove = new Map<string, PointRecord>();
  for (const ref of named) for (const p of await resolveNamed(repo, ref, scope)) remove.set(p.id, p);
  return namedGroups(await repo.catalog.list(scope), remove);
}

/**
 * The points `ref` names: a point (id, unique prefix, "latest") or, as for restore, a VM
 * backup's job id (every disk of it within the scope). POINT_AMBIGUOUS when it names both.
 */
async function resolveNamed(repo: Repository, ref: string, scope: { vm?: string; disk?: string }): Promise<PointRecord[]> {
  const job = await repo.catalog.findVmBackup(ref);
  let point: PointRecord | undefined;
  try {
    point = await repo.catalog.resolve(ref, scope);
  } catch (err) {
    if (!job || !isChunkvaultError(err, 'POINT_NOT_FOUND')) throw err;
  }
  if (point && job) throw new ChunkvaultError('POINT_AMBIGUOUS', `${ref} matches both a point and a VM backup: give more characters`);
  if (point) return [point];
  const points = (await Promise.all(job!.disks.map((d) => repo.catalog.get(d.point)))).filter(
    (p) => (scope.vm === undefined || p.vm === scope.vm) && (scope.disk === undefined || p.disk === scope.disk),
  );
  if (points.length === 0) throw new ChunkvaultError('POINT_NOT_FOUND', `VM backup ${job!.id} has no point within the given --vm/--disk`, { details: { point: ref } });
  return points;
}

/** The groups of the disks that lose a named point; their other points are kept ("not named"). */
function namedGroups(all: readonly PointRecord[], remove: ReadonlyMap<string, PointRecord>): ForgetGroup[] {
  const touched = new Set([...remove.values()].map((p) => JSON.stringify([p.vm, p.disk])));
  const groups = new Map<string, { keep: KeptPoint<PointRecord>[]; remove: PointRecord[] }>();
  for (const p of [...all].reverse()) {
    const key = JSON.stringify([p.vm, p.disk]);
    if (!touched.has(key)) continue;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { keep: [], remove: [] }));
    if (remove.has(p.id)) g.remove.push(p);
    else g.keep.push({ point: p, reasons: [NOT_NAMED] });
  }
  return [...groups.keys()].sort().map((key) => {
    const [vm, disk] = JSON.parse(key) as [string, string];
    return { vm, disk, ...groups.get(key)! };
  });
}

/**
 * Plans and, unless `dryRun`, applies a forget (see the module comment for what is
 * deleted, in which order, and why). Holds `locks/forget.lock` while it plans and
 * applies, so the plan is current when it is applied; REPO_LOCKED when another forget
 * holds it for longer than `lockWaitMs`.
 */
export async function forget(repo: Repository, request: ForgetRequest, lockWaitMs = 2000): Promise<ForgetResult> {
  if (request.dryRun) {
    const groups = await planForget(repo, request);
    const changes = vmRecordChanges(await repo.catalog.listVmBackups(), groups);
    return { dryRun: true, groups, removed: 0, vmBackups: { replaced: changes.replace.map((r) => r.id), deleted: changes.remove } };
  }
  const release = await acquireForgetLock(repo.dir, lockWaitMs);
  try {
    await repo.catalog.removeStaleVmTemporaries();
    const groups = await planForget(repo, request);
    const changes = vmRecordChanges(await repo.catalog.listVmBackups(), groups);
    // VM records first, then point records: see the module comment.
    for (const record of changes.replace) await repo.catalog.replaceVmBackup(record);
    for (const id of changes.remove) await repo.catalog.deleteVmBackup(id);
    const remove = groups.flatMap((g) => g.remove);
    for (const p of remove) await repo.catalog.deletePoint(p.id);
    return { dryRun: false, groups, removed: remove.length, vmBackups: { replaced: changes.replace.map((r) => r.id), deleted: changes.remove } };
  } finally {
    await release();
  }
}

/** The VM records that name a removed point: rewritten without those disks, or removed when none is left. */
function vmRecordChanges(records: readonly VmBackupRecord[], groups: readonly ForgetGroup[]): { replace: VmBackupRecord[]; remove: string[] } {
  const ids = new Set(groups.flatMap((g) => g.remove.map((p) => p.id)));
  const replace: VmBackupRecord[] = [];
  const remove: string[] = [];
  for (const record of records) {
    const disks = record.disks.filter((d) => !ids.has(d.point));
    if (disks.length === record.disks.length) continue;
    if (disks.length === 0) remove.push(record.id);
    else replace.push({ ...record, disks });
  }
  return { replace, remove };
}

interface LockOwner {
  readonly pid: number;
  readonly host: string;
  readonly time: string;
}

/**
 * Takes `locks/forget.lock`: the lock file is written in full under a unique name and
 * hard-linked into place (link fails when the name exists), so a lock is never seen half
 * written. A lock whose owner was a process of this host that no longer runs is stale and
 * removed. Returns the release function.
 */
async function acquireForgetLock(repoDir: string, waitMs: number): Promise<() => Promise<void>> {
  const dir = join(repoDir, 'locks');
  const lock = join(dir, 'forget.lock');
  const mine = join(dir, `forget.lock.${process.pid}.${Date.now()}`);
  await fsp.mkdir(dir, { recursive: true });
  const owner: LockOwner = { pid: process.pid, host: hostname(), time: new Date().toISOString() };
  await fsp.writeFile(mine, JSON.stringify(owner) + '\n');
  const deadline = Date.now() + waitMs;
  try {
    for (;;) {
      try {
        await fsp.link(mine, lock);
        await removeDeadCandidates(dir);
        return async () => fsp.rm(lock, { force: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = await readLockOwner(lock);
      if (holder && isStale(holder)) {
        await fsp.rm(lock, { force: true });
        continue;
      }
      if (Date.now() >= deadline) {
        throw new ChunkvaultError('REPO_LOCKED', `another forget holds ${lock}${holder ? ` (pid ${holder.pid} on ${holder.host} since ${holder.time})` : ''}; remove it if no forget runs`, {
          details: { lock },
        });
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await fsp.rm(mine, { force: true });
  }
}

/** Removes lock candidates (`forget.lock.<pid>.<ms>`) that forgets of this host left when they died. */
async function removeDeadCandidates(dir: string): Promise<void> {
  for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
    const m = /^forget\.lock\.(\d+)\.\d+$/.exec(name);
    if (m && isStale({ pid: Number(m[1]), host: hostname(), time: '' })) await fsp.rm(join(dir, name), { force: true });
  }
}

async function readLockOwner(lock: string): Promise<LockOwner | undefined> {
  try {
    return JSON.parse(await fsp.readFile(lock, 'utf8')) as LockOwner;
  } catch {
    return undefined; // just released, or unreadable: wait and retry
  }
}

/** True when the lock's owner ran on this host and is gone (a crashed forget). */
function isStale(owner: LockOwner): boolean {
  if (owner.host !== hostname() || !Number.isSafeInteger(owner.pid)) return false;
  try {
    process.kill(owner.pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

