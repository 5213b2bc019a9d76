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
import { bindingOf, keys } from './object-repo/binding.js';

/** Removes the point records and maps of a job that will never be committed. */
export async function discardJob(repo: Repository, pointIds: readonly string[]): Promise<void> {
  const binding = bindingOf(repo.dir);
  for (const id of pointIds) {
    await binding?.store.delete(keys.point(id));
    await binding?.store.delete(keys.map(id));
    await rm(join(repo.dir, 'catalog', 'points', `${id}.json`), { force: true });
    await rm(mapPath(repo.dir, id), { force: true });
  }
}
