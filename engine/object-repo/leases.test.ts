import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isChunkvaultError } from '../errors.js';
import { LocalDirStore } from '../storage/index.js';
import { keys } from './binding.js';
import { enterSession, liveSessions, takeGcLease } from './leases.js';
import { isObjectStoreUrl, parseObjectStoreUrl } from './open.js';

const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
const lease = (expiresInMs: number) => enc({ owner: 'x', agent: 'other', host: 'h', pid: 1, kind: 'gc', expires: new Date(Date.now() + expiresInMs).toISOString() });

async function code(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return isChunkvaultError(err) ? err.code : String(err);
  }
}

describe('object-store repository URLs', () => {
  it('parses bucket and prefix', () => {
    expect(parseObjectStoreUrl('s3://bucket')).toEqual({ bucket: 'bucket', prefix: '' });
    expect(parseObjectStoreUrl('s3://bucket/')).toEqual({ bucket: 'bucket', prefix: '' });
    expect(parseObjectStoreUrl('s3://my.bucket/a/b/')).toEqual({ bucket: 'my.bucket', prefix: 'a/b/' });
    expect(isObjectStoreUrl('s3://b/x')).toBe(true);
    expect(isObjectStoreUrl('/srv/repo')).toBe(false);
    expect(() => parseObjectStoreUrl('s3://B_ad/x')).toThrow(/s3:\/\/bucket/);
  });
});

describe('GC lease and session markers', () => {
  let root: string;
  let store: LocalDirStore;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'cv-leases-'));
    store = new LocalDirStore(root, { durable: false });
  });
  afterEach(async () => rm(root, { recursive: true, force: true }));

  it('a live session keeps GC out, and GC gives the lease back', async () => {
    const s = await enterSession(store, 'a1', 'backup');
    expect(await liveSessions(store)).toHaveLength(1);
    expect(await code(takeGcLease(store, 'a2'))).toBe('REPO_BUSY');
    expect(await store.head(keys.gcLease)).toBeUndefined();
    await s.release();
    const gc = await takeGcLease(store, 'a2');
    await gc.check();
    await gc.release();
    expect(await store.head(keys.gcLease)).toBeUndefined();
  });

  it('a live lease keeps sessions and other GCs out; an expired one is taken over', async () => {
    const gc = await takeGcLease(store, 'a1');
    expect(await code(enterSession(store, 'a2', 'backup'))).toBe('GC_RUNNING');
    expect(await liveSessions(store)).toEqual([]);
    expect(await code(takeGcLease(store, 'a2'))).toBe('GC_RUNNING');
    await gc.release();
    await store.put(keys.gcLease, lease(-1000));
    const next = await takeGcLease(store, 'a2');
    await next.check();
    await next.release();
  });

  it('a GC whose lease was taken over notices at its next check', async () => {
    const gc = await takeGcLease(store, 'a1');
    await store.put(keys.gcLease, lease(60_000));
    expect(await code(gc.check())).toBe('GC_RUNNING');
    await gc.release(); // not ours any more: left alone
    expect(await store.head(keys.gcLease)).toBeGreaterThan(0);
  });

  it('expired session markers do not block GC', async () => {
    await store.put(`${keys.sessionPrefix}dead-1.json`, lease(-1));
    const gc = await takeGcLease(store, 'a1');
    await gc.release();
  });
});
