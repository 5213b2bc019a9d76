/**
 * The catalog: committed point records, one JSON file each under
 * `catalog/points/` (FORMAT.md "Catalog point record"). Renaming the record into
 * place is the commit of a backup: a point without its record does not exist.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { fsyncDir, writeFileAtomic } from './_fs.js';
import { ChunkvaultError } from './errors.js';
import { ownedTmp } from './_owner.js';
import { mapPath } from './point-map.js';
import { bindingOf, keys, uploadFile } from './object-repo/binding.js';

export interface PointStats {
  readonly bytesRead: number;
  /** Stored (compressed) bytes this backup added to the repository. */
  readonly bytesNew: number;
  /** Raw bytes of the chunks this backup added. */
  readonly rawNew: number;
  readonly chunksRead: number;
  readonly chunksZero: number;
  readonly chunksNew: number;
  readonly chunksDedup: number;
  readonly durationMs: number;
}

export interface PointRecord {
  readonly id: string;
  readonly vm: string;
  readonly disk: string;
  readonly time: string;
  readonly parent: string | null;
  readonly mode: 'full' | 'incremental';
  readonly sizeBytes: number;
  readonly chunkSize: number;
  readonly slotCount: number;
  readonly mapDigest: string;
  readonly changeToken: string | null;
  readonly source: string;
  readonly stats: PointStats;
  /** Adapter-specific facts (e.g. why a full read was forced). */
  readonly meta?: Record<string, unknown>;
  /**
   * The VM backup (job) this point belongs to, for points of a multi-disk job. Such a
   * point exists only once its job's VM record is committed.
   */
  readonly job?: string;
}

/** A VM-level record grouping the points one backup job made of a VM's disks. */
export interface VmBackupRecord {
  readonly id: string;
  readonly vm: string;
  readonly time: string;
  readonly disks: readonly { readonly disk: string; readonly point: string }[];
  /** The VM's configuration as the hypervisor described it (opaque to the engine). */
  readonly config?: unknown;
  readonly meta?: Record<string, unknown>;
}

const NAME_RE = /^[A-Za-z0-9._:@+-]{1,128}$/;

/** Checks a vm or disk name (FORMAT.md: 1-128 chars of [A-Za-z0-9._:@+-]). */
export function validateName(kind: 'vm' | 'disk', name: string): string {
  if (!NAME_RE.test(name) || name === '.' || name === '..') {
    throw new ChunkvaultError('INVALID_ARGUMENT', `invalid ${kind} name "${name}": use 1-128 of A-Z a-z 0-9 . _ : @ + -`);
  }
  return name;
}

/** A new point id: 16 random lower-case hex chars (short unique prefixes, like restic). */
export function newPointId(): string {
  return randomBytes(8).toString('hex');
}

const ID_RE = /^[0-9a-f]{16}$/;

function byTime(a: PointRecord, b: PointRecord): number {
  return a.time < b.time ? -1 : a.time > b.time ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** A new VM backup (job) id: 16 random hex chars. */
export const newJobId = newPointId;

/** A JSON record, or undefined when it was deleted meanwhile (forget). */
async function readIfPresent<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await fsp.readFile(path, 'utf8')) as T;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function readJsonDir(dir: string): Promise<string[]> {
  try {
    return (await fsp.readdir(dir)).filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -5)).filter((id) => ID_RE.test(id));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

export class Catalog {
  private readonly dir: string;
  private readonly vmDir: string;

  constructor(private readonly repoDir: string) {
    this.dir = join(repoDir, 'catalog', 'points');
    this.vmDir = join(repoDir, 'catalog', 'vm-backups');
  }

  /**
   * Commits a VM record: this rename makes every point of the job visible at once
   * (FORMAT.md "Commit order"). Every listed point must already be committed.
   */
  async commitVmBackup(record: VmBackupRecord): Promise<void> {
    await putRecord(this.repoDir, keys.vmBackup(record.id), record);
    const tmp = ownedTmp(join(this.repoDir, 'tmp'), `${record.id}.vm.json.tmp`);
    await writeFileAtomic(tmp, join(this.vmDir, `${record.id}.json`), JSON.stringify(record, null, 2) + '\n');
  }

  /** The VM record whose id is `ref` or starts with it (4+ chars), if exactly one; POINT_AMBIGUOUS if several. */
  async findVmBackup(ref: string): Promise<VmBackupRecord | undefined> {
    if (!/^[0-9a-f]{4,16}$/.test(ref)) return undefined;
    const matches = (await this.listVmBackups()).filter((r) => r.id.startsWith(ref));
    if (matches.length > 1) throw new ChunkvaultError('POINT_AMBIGUOUS', `prefix ${ref} matches ${matches.length} VM backups`);
    return matches[0];
  }

  /** Every committed VM record, oldest first. */
  async listVmBackups(vm?: string): Promise<VmBackupRecord[]> {
    const ids = await readJsonDir(this.vmDir);
    const all = (await Promise.all(ids.map(async (id) => readIfPresent(join(this.vmDir, `${id}.json`))))).filter((r): r is VmBackupRecord => r !== undefined);
    return all.filter((r) => !vm || r.vm === vm).sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0));
  }

  /** Commits a point record (tmp + fsync + rename + directory fsync). */
  async commit(record: PointRecord): Promise<void> {
    const binding = bindingOf(this.repoDir);
    // On an object store the map goes first and the record's PUT is the commit (FORMAT.md).
    if (binding) await uploadFile(binding.store, keys.map(record.id), mapPath(this.repoDir, record.id));
    await putRecord(this.repoDir, keys.point(record.id), record);
    const tmp = ownedTmp(join(this.repoDir, 'tmp'), `${record.id}.json.tmp`);
    await writeFileAtomic(tmp, join(this.dir, `${record.id}.json`), JSON.stringify(record, null, 2) + '\n');
  }

  /** Every committed point, oldest (by commit time) first. Unparseable records are reported, not skipped. */
  async list(filter: { vm?: string; disk?: string } = {}): Promise<PointRecord[]> {
    const ids = await readJsonDir(this.dir);
    const records = await this.readPresent(ids);
    const jobs = records.some((r) => r.job) ? new Set(await readJsonDir(this.vmDir)) : new Set<string>();
    return records
      .filter((r) => !r.job || jobs.has(r.job))
      .filter((r) => (!filter.vm || r.vm === filter.vm) && (!filter.disk || r.disk === filter.disk))
      .sort(byTime);
  }

  /** Point records of a job whose VM record was never committed (for cleanup). */
  async uncommittedJobPoints(): Promise<PointRecord[]> {
    const records = await this.readPresent(await readJsonDir(this.dir));
    const jobs = new Set(await readJsonDir(this.vmDir));
    return records.filter((r) => r.job && !jobs.has(r.job));
  }

  /** A committed point (points of uncommitted jobs are POINT_NOT_FOUND). */
  async get(id: string): Promise<PointRecord> {
    const record = await this.read(id);
    if (record.job && !(await readJsonDir(this.vmDir)).includes(record.job)) {
      throw new ChunkvaultError('POINT_NOT_FOUND', `no point ${id}`, { details: { point: id } });
    }
    return record;
  }

  /** The records of `ids` that still exist: a forget may delete one between listing and reading. */
  private async readPresent(ids: readonly string[]): Promise<PointRecord[]> {
    const out = await Promise.all(ids.map((id) => this.read(id).catch((err: unknown) => {
      if (err instanceof ChunkvaultError && err.code === 'POINT_NOT_FOUND') return undefined;
      throw err;
    })));
    return out.filter((r): r is PointRecord => r !== undefined);
  }

  private async read(id: string): Promise<PointRecord> {
    let text: string;
    try {
      text = await fsp.readFile(join(this.dir, `${id}.json`), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new ChunkvaultError('POINT_NOT_FOUND', `no point ${id}`, { details: { point: id } });
      }
      throw err;
    }
    try {
      return JSON.parse(text) as PointRecord;
    } catch (err) {
      throw new ChunkvaultError('MAP_CORRUPT', `point record ${id} is not valid JSON`, { cause: err });
    }
  }

  /** The newest committed point of (vm, disk), or undefined. */
  async latest(vm: string, disk: string): Promise<PointRecord | undefined> {
    const all = await this.list({ vm, disk });
    return all.at(-1);
  }

  /**
   * Resolves a user-given point reference: a full id, a unique prefix (4+ chars), or
   * `latest` (needs `vm`, and `disk` when the vm has several disks).
   */
  async resolve(ref: string, scope: { vm?: string; disk?: string } = {}): Promise<PointRecord> {
    const all = await this.list(scope);
    if (ref === 'latest') {
      const disks = new Set(all.map((p) => `${p.vm}/${p.disk}`));
      if (disks.size > 1) {
        throw new ChunkvaultError('POINT_AMBIGUOUS', '"latest" matches several disks: give --vm and --disk');
      }
      const last = all.at(-1);
      if (!last) throw new ChunkvaultError('POINT_NOT_FOUND', 'no points match "latest"');
      return last;
    }
    if (!/^[0-9a-f]{4,16}$/.test(ref)) {
      throw new ChunkvaultError('POINT_NOT_FOUND', `"${ref}" is not a point id`, { details: { point: ref } });
    }
    const matches = all.filter((p) => p.id.startsWith(ref));
    if (matches.length === 0) throw new ChunkvaultError('POINT_NOT_FOUND', `no point ${ref}`, { details: { point: ref } });
    if (matches.length > 1) throw new ChunkvaultError('POINT_AMBIGUOUS', `point prefix ${ref} matches ${matches.length} points`);
    return matches[0] as PointRecord;
  }

  // Deletion, for `forget` (engine/forget.ts): catalog records only, never maps or
  // containers (GC removes those once nothing references them).

  /** Deletes a point record; durable on return (directory fsynced). An absent record is not an error. */
  async deletePoint(id: string): Promise<void> {
    await bindingOf(this.repoDir)?.store.delete(keys.point(checkId(id)));
    await fsp.rm(join(this.dir, `${checkId(id)}.json`), { force: true });
    await fsyncDir(this.dir);
  }

  /**
   * Replaces a committed VM record atomically (forget drops disks from it). The
   * temporary file lives beside the record, not in `tmp/`: forget holds no index lock,
   * and a process that opens the index empties `tmp/`.
   */
  async replaceVmBackup(record: VmBackupRecord): Promise<void> {
    await putRecord(this.repoDir, keys.vmBackup(checkId(record.id)), record);
    const tmp = join(this.vmDir, `${checkId(record.id)}${VM_TMP_SUFFIX}`);
    await writeFileAtomic(tmp, join(this.vmDir, `${record.id}.json`), JSON.stringify(record, null, 2) + '\n');
  }

  /** Deletes a VM record (its points then become uncommitted); durable on return. */
  async deleteVmBackup(id: string): Promise<void> {
    await bindingOf(this.repoDir)?.store.delete(keys.vmBackup(checkId(id)));
    await fsp.rm(join(this.vmDir, `${checkId(id)}.json`), { force: true });
    await fsyncDir(this.vmDir);
  }

  /** Removes temporaries a crashed replaceVmBackup left; call only while no replace can run. */
  async removeStaleVmTemporaries(): Promise<void> {
    const names = await fsp.readdir(this.vmDir).catch(() => [] as string[]);
    await Promise.all(names.filter((n) => n.endsWith(VM_TMP_SUFFIX)).map((n) => fsp.rm(join(this.vmDir, n), { force: true })));
  }
}

const VM_TMP_SUFFIX = '.json.replace-tmp';

/** On an object store, writes a catalog record to the bucket (before the local cache copy). */
async function putRecord(repoDir: string, key: string, record: PointRecord | VmBackupRecord): Promise<void> {
  const binding = bindingOf(repoDir);
  if (binding) await binding.store.put(key, new TextEncoder().encode(JSON.stringify(record, null, 2) + '\n'));
}

/** A record id as a safe file name, else INVALID_ARGUMENT (ids come from parsed JSON). */
function checkId(id: string): string {
  if (!ID_RE.test(id)) throw new ChunkvaultError('INVALID_ARGUMENT', `"${id}" is not a record id`, { details: { id } });
  return id;
}
