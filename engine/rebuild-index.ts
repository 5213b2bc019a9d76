/**
 * Rebuilds the chunk index from the container footers (the index is only a cache of
 * them). A container whose footer is damaged is recovered by scanning its record
 * headers; records whose payload hash fails are left out and reported.
 *
 * `index rebuild` clears the index first, so it needs the repository to itself: it
 * takes the GC lock and refuses (REPO_BUSY) while any backup, restore or verify
 * session is live. `populateIndex` only adds entries (first open of a repository).
 */
import type { Repository } from './repository.js';
import { ContainerReader } from './container.js';
import { locationOf, type ChunkIndex, type ChunkLocation } from './chunk-index.js';
import type { FooterEntry } from './container-format.js';
import { ChunkvaultError } from './errors.js';
import { bindingOf, KNOWN_TABLE, markKnown } from './object-repo/binding.js';

export interface RebuildReport {
  readonly containers: number;
  readonly chunks: number;
  /** Containers whose footer was damaged and were scanned record by record. */
  readonly scanned: string[];
}

type Progress = (p: { done: number; total: number }) => void;

export async function rebuildIndex(repo: Repository, onProgress?: Progress): Promise<RebuildReport> {
  const index = await repo.index();
  const lock = await repo.gcLock();
  try {
    const live = await repo.sessions.live(true);
    if (live.length > 0) {
      throw new ChunkvaultError('REPO_BUSY', `index rebuild needs the repository to itself: ${live.length} backup/restore session(s) running (pids ${live.map((s) => s.pid).join(', ')})`);
    }
    await index.clear();
    // GC tables describe entries of the old index: a rebuilt index starts a new GC cycle.
    for (const name of ['gc-condemned', 'gc-condemned-loc', KNOWN_TABLE] as const) await index.transact(() => void index.aux(name).clearSync());
    return await populateIndex(repo, index, onProgress);
  } finally {
    await lock.end();
  }
}

/** Adds every sealed container's footer entries to `index` (no clearing). */
export async function populateIndex(repo: Repository, index: ChunkIndex, onProgress?: Progress): Promise<RebuildReport> {
  const ids = await repo.containerIds();
  const bound = bindingOf(repo.dir) !== undefined;
  const scanned: string[] = [];
  let chunks = 0;
  let done = 0;
  for (const id of ids) {
    const reader = await ContainerReader.open(repo.dir, id);
    try {
      let entries: FooterEntry[];
      try {
        entries = await reader.readFooter();
      } catch {
        scanned.push(id);
        entries = [];
        for await (const e of reader.scanRecords()) entries.push(e);
      }
      const batch: [Uint8Array, ChunkLocation][] = entries.map((e) => [e.digest, locationOf(id, e)]);
      await index.putMany(batch);
      if (bound) await markKnown(index, id);
      chunks += batch.length;
    } finally {
      await reader.close();
    }
    onProgress?.({ done: ++done, total: ids.length });
  }
  return { containers: ids.length, chunks, scanned };
}
