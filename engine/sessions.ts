/**
 * The session registry (FORMAT.md "Sessions and locks"): every operation that may
 * take a dedup hit, write chunks or read chunks registers itself as one small file
 * `locks/sessions/<id>.json` for its whole duration. GC reads the registry to know
 * which operations could hold a reference it cannot see yet (a dedup hit not yet in a
 * committed point, a location read just before a container was compacted).
 *
 * Liveness: a session is live while its file exists and its process does: same host,
 * the pid exists and its kernel start time (/proc/<pid>/stat) matches what the session
 * recorded, so a reused pid is not mistaken for the writer. A session of another host
 * is always treated as live (we cannot look at its processes).
 *
 * The GC lock (`locks/gc.lock`) is the same kind of record, created with O_EXCL: one
 * GC (or index rebuild) at a time, taken over only when its holder is dead.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from './_fs.js';
import { ChunkvaultError } from './errors.js';
import { OWN_START, ownedTmp, procStartOf } from './_owner.js';

export type SessionKind = 'backup' | 'read' | 'gc';

export interface SessionRecord {
  readonly id: string;
  readonly kind: SessionKind;
  readonly pid: number;
  readonly host: string;
  /** Kernel start time of the process (clock ticks since boot), '' where unknown. */
  readonly procStart: string;
  readonly started: string;
  /** The multi-disk job a backup session writes, if any. */
  readonly job?: string;
}

/** A registered session; `end()` removes it (idempotent). */
export interface Session {
  readonly record: SessionRecord;
  end(): Promise<void>;
}

const ID_RE = /^[0-9a-f]{16}$/;

async function selfRecord(kind: SessionKind, job?: string): Promise<SessionRecord> {
  return {
    id: randomBytes(8).toString('hex'),
    kind,
    pid: process.pid,
    host: hostname(),
    procStart: OWN_START,
    started: new Date().toISOString(),
    ...(job ? { job } : {}),
  };
}

/** Whether the process behind `r` still runs (conservatively true for other hosts). */
export async function isLive(r: SessionRecord): Promise<boolean> {
  if (r.host !== hostname()) return true;
  const start = await procStartOf(r.pid);
  if (start === undefined) return false;
  return r.procStart === '' || start === r.procStart;
}

export class SessionRegistry {
  private readonly dir: string;

  constructor(private readonly repoDir: string) {
    this.dir = join(repoDir, 'locks', 'sessions');
  }

  /** Registers a session; the file is durable before this returns. */
  async begin(kind: SessionKind, job?: string): Promise<Session> {
    const record = await selfRecord(kind, job);
    await fsp.mkdir(this.dir, { recursive: true });
    await writeFileAtomic(ownedTmp(join(this.repoDir, 'tmp'), `session-${record.id}.tmp`), join(this.dir, `${record.id}.json`), JSON.stringify(record) + '\n');
    let ended = false;
    return {
      record,
      end: async () => {
        if (ended) return;
        ended = true;
        await fsp.rm(join(this.dir, `${record.id}.json`), { force: true });
      },
    };
  }

  /** Every registered session whose process is alive; dead ones are removed when `prune`. */
  async live(prune = false): Promise<SessionRecord[]> {
    const names = await fsp.readdir(this.dir).catch(() => [] as string[]);
    const out: SessionRecord[] = [];
    for (const name of names) {
      const id = name.replace(/\.json$/, '');
      if (!ID_RE.test(id) || !name.endsWith('.json')) continue;
      const record = await this.read(id);
      if (!record) continue;
      if (await isLive(record)) out.push(record);
      else if (prune) await fsp.rm(join(this.dir, name), { force: true });
    }
    return out;
  }

  /** Ids among `ids` whose sessions are still live. */
  async stillLive(ids: readonly string[]): Promise<string[]> {
    const out: string[] = [];
    for (const id of ids) {
      const r = await this.read(id);
      if (r && (await isLive(r))) out.push(id);
    }
    return out;
  }

  private async read(id: string): Promise<SessionRecord | undefined> {
    try {
      return JSON.parse(await fsp.readFile(join(this.dir, `${id}.json`), 'utf8')) as SessionRecord;
    } catch {
      // Vanished (ended) or half-visible: either way not a session to wait for.
      return undefined;
    }
  }
}

/** Compare-and-set storage for the GC lock (the index's `gc-meta` table). */
export interface LockCell {
  /** Current holder bytes, or undefined. */
  read(): Uint8Array | undefined;
  /** Atomically replaces `expected` (undefined = absent) with `next`; false when it changed. */
  swap(expected: Uint8Array | undefined, next: Uint8Array | undefined): boolean;
}

/**
 * The exclusive GC lock: one GC or index rebuild per repository. It lives in the
 * index's LMDB environment so that taking it over from a dead holder is one atomic
 * compare-and-set across processes (a lock file cannot be replaced atomically).
 */
export async function acquireGcLock(cell: LockCell): Promise<Session> {
  const record = await selfRecord('gc');
  const mine = new TextEncoder().encode(JSON.stringify(record));
  for (let attempt = 0; attempt < 5; attempt++) {
    const current = cell.read();
    if (current) {
      let holder: SessionRecord | undefined;
      try {
        holder = JSON.parse(new TextDecoder().decode(current)) as SessionRecord;
      } catch {
        holder = undefined;
      }
      if (holder && (await isLive(holder))) {
        throw new ChunkvaultError('GC_RUNNING', `another gc or index rebuild is running (pid ${holder.pid} on ${holder.host}, since ${holder.started})`, {
          details: { pid: holder.pid, host: holder.host },
        });
      }
    }
    if (cell.swap(current, mine)) {
      return { record, end: async () => void cell.swap(mine, undefined) };
    }
  }
  throw new ChunkvaultError('GC_RUNNING', 'could not take the gc lock (contended)');
}
