/**
 * Coordination of several media agents on one bucket (FORMAT.md "Object storage",
 * docs/object-storage.md "Several media agents on one bucket").
 *
 * - A **session marker** `locks/sessions/<agent>-<id>.json` is written by every
 *   backup, restore and verify of every agent before its first index lookup, refreshed
 *   while it runs and deleted when it ends; it expires `SESSION_TTL_MS` after its last
 *   refresh (a crashed agent stops blocking GC then).
 * - The **GC lease** `locks/gc.lease` is created with a conditional PUT
 *   (`If-None-Match: *`, atomic on radosgw and AWS): one GC in the whole bucket at a time.
 *
 * Exclusion, Dekker-style over a strongly consistent store: a session writes its marker
 * and then reads the lease; GC creates the lease and then lists the markers. Whichever
 * comes second sees the other, so a GC never runs beside a session of any agent (the
 * session fails with GC_RUNNING, or the GC with REPO_BUSY).
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { ChunkvaultError, isChunkvaultError } from '../errors.js';
import type { ObjectStore } from '../storage/index.js';
import { keys } from './binding.js';

export const SESSION_TTL_MS = 10 * 60_000;
export const GC_LEASE_TTL_MS = 60 * 60_000;
const REFRESH_DIVISOR = 4;

interface LeaseBody {
  readonly owner: string;
  readonly agent: string;
  readonly host: string;
  readonly pid: number;
  readonly kind: string;
  readonly expires: string;
}

const enc = new TextEncoder();

function body(owner: string, agent: string, kind: string, ttlMs: number): Uint8Array {
  const b: LeaseBody = { owner, agent, host: hostname(), pid: process.pid, kind, expires: new Date(Date.now() + ttlMs).toISOString() };
  return enc.encode(JSON.stringify(b) + '\n');
}

async function readLease(store: ObjectStore, key: string): Promise<LeaseBody | undefined> {
  try {
    return JSON.parse(new TextDecoder().decode(await store.get(key))) as LeaseBody;
  } catch (err) {
    if (isChunkvaultError(err, 'OBJECT_NOT_FOUND')) return undefined;
    throw err;
  }
}

const expired = (l: LeaseBody): boolean => !(Date.parse(l.expires) > Date.now());

/** Something held in the bucket until `release`. */
export interface Held {
  release(): Promise<void>;
}

/** Refreshes `key` every ttl/4 while held; the timer never keeps the process alive. */
function refresher(refresh: () => Promise<void>, ttlMs: number): NodeJS.Timeout {
  const t = setInterval(() => void refresh().catch(() => undefined), ttlMs / REFRESH_DIVISOR);
  t.unref();
  return t;
}

/** Publishes a session marker, then fails with GC_RUNNING if a live GC lease exists. */
export async function enterSession(store: ObjectStore, agent: string, kind: string): Promise<Held> {
  const owner = randomBytes(8).toString('hex');
  const key = `${keys.sessionPrefix}${agent}-${owner}.json`;
  const put = () => store.put(key, body(owner, agent, kind, SESSION_TTL_MS));
  await put();
  const lease = await readLease(store, keys.gcLease).catch(async (err: unknown) => {
    await store.delete(key).catch(() => undefined);
    throw err;
  });
  if (lease && !expired(lease)) {
    await store.delete(key);
    throw new ChunkvaultError('GC_RUNNING', `a GC holds the bucket (agent ${lease.agent} on ${lease.host}, lease until ${lease.expires}); try again later`, {
      details: { agent: lease.agent, host: lease.host, expires: lease.expires },
    });
  }
  const timer = refresher(put, SESSION_TTL_MS);
  return {
    release: async () => {
      clearInterval(timer);
      await store.delete(key);
    },
  };
}

/** Unexpired session markers of every agent. */
export async function liveSessions(store: ObjectStore): Promise<LeaseBody[]> {
  const out: LeaseBody[] = [];
  for await (const e of store.list(keys.sessionPrefix)) {
    const l = await readLease(store, e.key).catch(() => undefined);
    if (l && !expired(l)) out.push(l);
  }
  return out;
}

async function createLease(store: ObjectStore, data: Uint8Array): Promise<boolean> {
  try {
    await store.put(keys.gcLease, data, { ifNoneMatch: '*' });
    return true;
  } catch (err) {
    if (isChunkvaultError(err, 'OBJECT_EXISTS')) return false;
    throw err;
  }
}

/**
 * Takes the bucket's GC lease: GC_RUNNING when another GC holds it, REPO_BUSY (lease
 * given back) while any agent has a live session. An expired lease is deleted and
 * created afresh; `check` re-reads it before each destructive step.
 */
export async function takeGcLease(store: ObjectStore, agent: string): Promise<Held & { check(): Promise<void> }> {
  const owner = randomBytes(8).toString('hex');
  const data = () => body(owner, agent, 'gc', GC_LEASE_TTL_MS);
  if (!(await createLease(store, data()))) {
    const cur = await readLease(store, keys.gcLease);
    if (cur && !expired(cur)) {
      throw new ChunkvaultError('GC_RUNNING', `another GC holds the bucket (agent ${cur.agent} on ${cur.host}, until ${cur.expires})`, { details: { agent: cur.agent } });
    }
    await store.delete(keys.gcLease);
    if (!(await createLease(store, data()))) throw new ChunkvaultError('GC_RUNNING', 'another GC took the expired lease first');
  }
  const check = async (): Promise<void> => {
    const cur = await readLease(store, keys.gcLease);
    if (cur?.owner !== owner) throw new ChunkvaultError('GC_RUNNING', 'the GC lease was lost (expired and taken over)');
  };
  const release = async (): Promise<void> => {
    clearInterval(timer);
    const cur = await readLease(store, keys.gcLease).catch(() => undefined);
    if (cur?.owner === owner) await store.delete(keys.gcLease);
  };
  const timer = refresher(async () => {
    await check();
    await store.put(keys.gcLease, data());
  }, GC_LEASE_TTL_MS);
  await check();
  const live = await liveSessions(store);
  if (live.length > 0) {
    await release();
    const who = [...new Set(live.map((l) => `${l.agent}@${l.host}`))].join(', ');
    throw new ChunkvaultError('REPO_BUSY', `GC on an object store needs the bucket to itself: ${live.length} session(s) running (${who})`, { details: { sessions: live.length } });
  }
  return { check, release };
}
