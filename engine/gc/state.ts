/**
 * GC's persistent state (FORMAT.md "Garbage collection"): `gc/state.json`, written
 * atomically after every step so that a GC killed at any moment resumes where it
 * stopped. The condemned entries themselves live in the index environment
 * (`gc-condemned`, `gc-condemned-loc`), moved there in the same transactions that
 * remove them from the index.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../_fs.js';
import { ownedTmp } from '../_owner.js';
import { ChunkvaultError } from '../errors.js';

export interface RetiredBatch {
  /** Containers whose records are all dead or were copied elsewhere. */
  readonly containers: string[];
  /** Sessions live when they were retired: unlinked once none of them runs. */
  readonly barrier: string[];
}

export interface GcState {
  readonly version: 1;
  /** Increments with every mark. */
  epoch: number;
  /** `idle`: nothing pending; `condemning`: a sweep was interrupted; `condemned`: waiting for `barrier`. */
  phase: 'idle' | 'condemning' | 'condemned';
  /** ISO time of the mark that made the pending condemned set. */
  markedAt: string | null;
  /** Point records that existed at the mark (their chunks were marked live). */
  markedPoints: string[];
  /** Maps that had no point record at the mark: removed at finish if still orphaned. */
  orphanMaps: string[];
  /** Containers that existed at the mark and not at the previous one: checked for being unindexed. */
  newContainers: string[];
  /** Backup sessions live when the sweep ended. */
  barrier: string[];
  retired: RetiredBatch[];
  /** Containers seen by the last completed mark (to find the new ones next time). */
  knownContainersFile: string | null;
}

export function initialState(): GcState {
  return { version: 1, epoch: 0, phase: 'idle', markedAt: null, markedPoints: [], orphanMaps: [], newContainers: [], barrier: [], retired: [], knownContainersFile: null };
}

export function gcDir(repoDir: string): string {
  return join(repoDir, 'gc');
}

export async function readState(repoDir: string): Promise<GcState> {
  let text: string;
  try {
    text = await fsp.readFile(join(gcDir(repoDir), 'state.json'), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return initialState();
    throw err;
  }
  try {
    const s = JSON.parse(text) as GcState;
    if (s.version !== 1 || !['idle', 'condemning', 'condemned'].includes(s.phase)) throw new TypeError('bad version or phase');
    return s;
  } catch (err) {
    throw new ChunkvaultError('REPO_CONFIG_INVALID', `gc/state.json is damaged: ${(err as Error).message}`, { cause: err });
  }
}

export async function writeState(repoDir: string, s: GcState): Promise<void> {
  const dir = gcDir(repoDir);
  await fsp.mkdir(dir, { recursive: true });
  await writeFileAtomic(ownedTmp(join(repoDir, 'tmp'), 'gc-state.json.tmp'), join(dir, 'state.json'), JSON.stringify(s) + '\n');
}
