/**
 * Backup sessions: one `PointIngest` per session, owned by the token that opened it.
 * A session idle for longer than the timeout (no request, no body bytes) is aborted:
 * a killed client leaves no point. A committed session's result is kept for a while
 * so that a retried commit gets the same answer.
 */
import { randomBytes } from 'node:crypto';
import { ChunkvaultError, type PointIngest, type PointRecord } from '../../engine/index.js';
import type { Metrics } from './metrics.js';
import type { Principal } from './tokens.js';

/** Digests a session remembers as uploaded (past this, a later duplicate is just asked for again). */
const MAX_REMEMBERED = 1 << 20;

export interface Session {
  readonly id: string;
  readonly tokenId: string;
  readonly tenant: string;
  readonly ingest: PointIngest;
  /** Hex digests this session uploaded: the tenant holds them once the point commits. */
  readonly uploaded: Set<string>;
  lastActive: number;
  active: number;
}

interface Finished {
  readonly tokenId: string;
  readonly point: PointRecord;
  readonly at: number;
}

export class SessionManager {
  private readonly open = new Map<string, Session>();
  private readonly finished = new Map<string, Finished>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly o: { timeoutMs: number; maxPerToken: number; metrics: Metrics; log: (entry: Record<string, unknown>) => void },
  ) {
    this.timer = setInterval(() => void this.sweep(), Math.max(100, Math.min(5000, o.timeoutMs / 4)));
    this.timer.unref();
  }

  /** Fails with TOO_MANY_SESSIONS when the token already has its share open. */
  checkCapacity(p: Principal): void {
    const mine = [...this.open.values()].filter((s) => s.tokenId === p.tokenId).length;
    if (mine >= this.o.maxPerToken) throw new ChunkvaultError('TOO_MANY_SESSIONS', `at most ${this.o.maxPerToken} sessions may be open per token`, { details: { limit: this.o.maxPerToken } });
  }

  add(p: Principal, ingest: PointIngest): Session {
    const s: Session = { id: randomBytes(12).toString('hex'), tokenId: p.tokenId, tenant: p.tenant, ingest, uploaded: new Set(), lastActive: Date.now(), active: 0 };
    this.open.set(s.id, s);
    this.o.metrics.sessionsOpen = this.open.size;
    return s;
  }

  /** The open session `id` of this token; SESSION_NOT_FOUND otherwise (also for another token's). */
  get(p: Principal, id: string): Session {
    const s = this.open.get(id);
    if (!s || s.tokenId !== p.tokenId) throw new ChunkvaultError('SESSION_NOT_FOUND', 'no such session (expired, aborted or never opened)');
    return s;
  }

  /** The point a finished session of this token committed, if any. */
  committed(p: Principal, id: string): PointRecord | undefined {
    const f = this.finished.get(id);
    return f && f.tokenId === p.tokenId ? f.point : undefined;
  }

  /** Runs `fn` as activity of `s` (the session cannot expire meanwhile). */
  async use<T>(s: Session, fn: () => Promise<T>): Promise<T> {
    s.active++;
    s.lastActive = Date.now();
    try {
      return await fn();
    } finally {
      s.active--;
      s.lastActive = Date.now();
    }
  }

  remember(s: Session, hex: string): void {
    if (s.uploaded.size < MAX_REMEMBERED) s.uploaded.add(hex);
  }

  /** Marks `s` committed (the point is kept for retried commits). */
  finish(s: Session, point: PointRecord): void {
    this.open.delete(s.id);
    this.finished.set(s.id, { tokenId: s.tokenId, point, at: Date.now() });
    this.o.metrics.sessionsOpen = this.open.size;
    this.o.metrics.sessionsEnded.committed++;
    this.o.metrics.bytesStored += s.ingest.bytesStored;
  }

  async abort(s: Session, outcome: 'aborted' | 'expired'): Promise<void> {
    if (!this.open.delete(s.id)) return;
    this.o.metrics.sessionsOpen = this.open.size;
    this.o.metrics.sessionsEnded[outcome]++;
    await s.ingest.abort();
    this.o.metrics.bytesStored += s.ingest.bytesStored;
    this.o.log({ level: 'info', msg: `session ${outcome}`, session: s.id, tenant: s.tenant, token: s.tokenId });
  }

  /** Aborts idle sessions; forgets old commit results. */
  async sweep(now = Date.now()): Promise<void> {
    // A request in flight keeps its session, unless no byte arrived for 4 timeouts (a stalled upload); a commit always finishes.
    const stale = (s: Session) => now - s.lastActive > this.o.timeoutMs && (s.active === 0 || (now - s.lastActive > 4 * this.o.timeoutMs && s.ingest.isOpen));
    const idle = [...this.open.values()].filter(stale);
    await Promise.allSettled(idle.map((s) => this.abort(s, 'expired')));
    for (const [id, f] of this.finished) if (now - f.at > Math.max(this.o.timeoutMs, 600_000)) this.finished.delete(id);
  }

  /** Aborts every session (server shutdown). */
  async close(): Promise<void> {
    clearInterval(this.timer);
    await Promise.allSettled([...this.open.values()].map((s) => this.abort(s, 'aborted')));
  }
}
