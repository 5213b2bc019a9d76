/**
 * Open point readers, kept for a short while: opening one checks the whole point map
 * against the catalog, which Range reads of an instant-restore front end should pay
 * once, not per request.
 */
import { PointReader, type PointRecord, type Repository } from '../../engine/index.js';

interface Entry {
  readonly reader: Promise<PointReader>;
  users: number;
  lastUsed: number;
}

export class ReaderCache {
  private readonly entries = new Map<string, Entry>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly max = 16,
    private readonly idleMs = 30_000,
  ) {
    this.timer = setInterval(() => void this.evict(Date.now()), Math.min(idleMs, 5000));
    this.timer.unref();
  }

  async use<T>(repo: Repository, point: PointRecord, fn: (r: PointReader) => Promise<T>): Promise<T> {
    let e = this.entries.get(point.id);
    if (!e) {
      e = { reader: PointReader.open(repo, point), users: 0, lastUsed: Date.now() };
      this.entries.set(point.id, e);
      e.reader.catch(() => this.entries.delete(point.id));
    }
    e.users++;
    try {
      return await fn(await e.reader);
    } finally {
      e.users--;
      e.lastUsed = Date.now();
      if (this.entries.size > this.max) await this.evict(Infinity);
    }
  }

  /** Closes readers idle since `before - idleMs` (all idle ones with Infinity, down to `max`). */
  private async evict(now: number): Promise<void> {
    for (const [id, e] of this.entries) {
      if (e.users > 0 || (now !== Infinity && now - e.lastUsed < this.idleMs)) continue;
      if (now === Infinity && this.entries.size <= this.max) break;
      this.entries.delete(id);
      await e.reader.then((r) => r.close(), () => undefined);
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    const all = [...this.entries.values()];
    this.entries.clear();
    await Promise.allSettled(all.map((e) => e.reader.then((r) => r.close())));
  }
}
