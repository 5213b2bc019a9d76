/**
 * Multi-disk backups: the points one job makes of a VM's disks become visible together
 * when the job's VM record is committed (one rename). A job that fails before that
 * leaves points nobody can see; `discardJob` removes them at once (GC would too).
 * The commit itself is `Catalog.commitVmBackup`.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Repository } from './repository.js';
import { mapPath } from './point-map.js';

/** Removes the point records and maps of a job that will never be committed. */
export async function discardJob(repo: Repository, pointIds: readonly string[]): Promise<void> {
  for (const id of pointIds) {
    await rm(join(repo.dir, 'catalog', 'points', `${id}.json`), { force: true });
    await rm(mapPath(repo.dir, id), { force: true });
  }
}
