/**
 * The one conformance suite every `ObjectStore` must pass (as classic-level runs
 * abstract-level's suite): round trips small and multipart, ranged reads at the edges,
 * head, paged list, delete, conditional create (also under a race), stream length
 * checks, key validation and, where the store verifies reads, corruption at rest.
 *
 * Data is self-describing: each 4-byte word holds its own offset XOR a seed, so a
 * misplaced, stale or foreign byte shows.
 */
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isChunkvaultError } from '../../engine/errors.js';
import type { ObjectStore } from '../../engine/storage/index.js';

export interface StoreHarness {
  readonly store: ObjectStore;
  /** Damages the stored bytes of `key` behind the store's back (same length). */
  readonly corrupt?: (key: string) => Promise<void>;
  /** Size of the "large" object, multipart on S3 (default 40 MiB). */
  readonly largeBytes?: number;
  readonly cleanup: () => Promise<void>;
}

export function pattern(size: number, seed = 0): Uint8Array {
  const out = new Uint8Array(size);
  const words = new Uint32Array(out.buffer, 0, size >>> 2);
  for (let i = 0; i < words.length; i++) words[i] = ((i << 2) ^ seed) >>> 0;
  for (let at = words.length << 2; at < size; at++) out[at] = (at ^ seed) & 0xff;
  return out;
}

/** A stream body that yields `data` in uneven slices. */
export function streamOf(data: Uint8Array, slice = 3 * 1024 * 1024 + 17): AsyncIterable<Uint8Array> {
  return Readable.from(
    (function* () {
      for (let at = 0; at < data.byteLength; at += slice) yield data.subarray(at, at + slice);
    })(),
  );
}

export async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).not.toBeNull();
  if (!isChunkvaultError(err)) throw err;
  expect(err.code, err.message).toBe(code);
}

async function collect(store: ObjectStore, prefix: string, pageSize?: number): Promise<Array<{ key: string; size: number }>> {
  const out: Array<{ key: string; size: number }> = [];
  for await (const entry of store.list(prefix, pageSize === undefined ? {} : { pageSize })) out.push(entry);
  return out;
}

/** `corruptible`: the harness can damage an object at rest (`corrupt`), and the store must notice. */
export function objectStoreConformance(title: string, factory: () => Promise<StoreHarness>, options: { corruptible?: boolean } = {}): void {
  describe(`ObjectStore conformance: ${title}`, () => {
    let h: StoreHarness;
    let store: ObjectStore;
    beforeAll(async () => {
      h = await factory();
      store = h.store;
    });
    afterAll(async () => {
      await h?.store.close();
      await h?.cleanup();
    });

    it('round-trips small objects, an empty one and a stream body', async () => {
      const small = pattern(1000, 1);
      await store.put('small/a', small);
      expect(Buffer.from(await store.get('small/a')).equals(Buffer.from(small))).toBe(true);
      await store.put('small/empty', new Uint8Array(0));
      expect((await store.get('small/empty')).byteLength).toBe(0);
      expect(await store.head('small/empty')).toBe(0);
      const streamed = pattern(100_003, 2);
      await store.put('small/streamed', { stream: streamOf(streamed, 4099), length: streamed.byteLength });
      expect(Buffer.from(await store.get('small/streamed')).equals(Buffer.from(streamed))).toBe(true);
      await store.put('small/a', pattern(10, 3));
      expect(await store.head('small/a')).toBe(10);
    });

    it('round-trips a large object from a buffer and from a stream', async () => {
      const size = h.largeBytes ?? 40 * 1024 * 1024;
      const big = pattern(size, 4);
      await store.put('large/buffer', big);
      expect(await store.head('large/buffer')).toBe(size);
      expect(Buffer.from(await store.get('large/buffer')).equals(Buffer.from(big))).toBe(true);
      const odd = pattern(size - 12_345, 5);
      await store.put('large/stream', { stream: streamOf(odd), length: odd.byteLength });
      expect(Buffer.from(await store.get('large/stream')).equals(Buffer.from(odd))).toBe(true);
      // Ranges across the part boundaries of a multipart object.
      for (const offset of [0, 5 * 1024 * 1024 - 3, 16 * 1024 * 1024 - 1, odd.byteLength - 100]) {
        const got = await store.getRange('large/stream', offset, 100);
        expect(Buffer.from(got).equals(Buffer.from(odd.subarray(offset, offset + 100)))).toBe(true);
      }
    });

    it('reads ranges at the edges and refuses ranges beyond the end', async () => {
      const data = pattern(4096 + 13, 6);
      await store.put('range/obj', data);
      const cases: Array<[number, number]> = [
        [0, 1],
        [data.byteLength - 1, 1],
        [0, data.byteLength],
        [4095, 8],
        [17, 0],
        [data.byteLength, 0],
      ];
      for (const [offset, length] of cases) {
        const got = await store.getRange('range/obj', offset, length);
        expect(Buffer.from(got).equals(Buffer.from(data.subarray(offset, offset + length))), `${offset}+${length}`).toBe(true);
      }
      await expectCode(store.getRange('range/obj', data.byteLength - 1, 2), 'INVALID_ARGUMENT');
      await expectCode(store.getRange('range/obj', data.byteLength, 1), 'INVALID_ARGUMENT');
      await expectCode(store.getRange('range/obj', -1, 1), 'INVALID_ARGUMENT');
      await expectCode(store.getRange('range/absent', 0, 1), 'OBJECT_NOT_FOUND');
    });

    it('heads, gets and deletes absent objects as the contract says', async () => {
      expect(await store.head('absent/x')).toBeUndefined();
      await expectCode(store.get('absent/x'), 'OBJECT_NOT_FOUND');
      await store.delete('absent/x');
      await store.put('del/x', pattern(10));
      await store.delete('del/x');
      expect(await store.head('del/x')).toBeUndefined();
      await expectCode(store.get('del/x'), 'OBJECT_NOT_FOUND');
      expect(await collect(store, 'del/')).toEqual([]);
    });

    it('lists by string prefix, page by page', async () => {
      const keys: string[] = [];
      for (let i = 0; i < 23; i++) keys.push(`list/p/${String(i).padStart(3, '0')}`);
      keys.push('list/p-sibling', 'list/q/deep/er/key', 'list/pp');
      await Promise.all(keys.map((k, i) => store.put(k, pattern(i))));
      const all = await collect(store, 'list/', 5);
      expect(all.map((e) => e.key).sort()).toEqual([...keys].sort());
      expect(all.find((e) => e.key === 'list/p/007')?.size).toBe(7);
      if (store.supports.orderedList) expect(all.map((e) => e.key)).toEqual([...keys].sort());
      const underP = await collect(store, 'list/p/', 4);
      expect(underP.map((e) => e.key).sort()).toEqual(keys.filter((k) => k.startsWith('list/p/')));
      expect((await collect(store, 'list/p')).length).toBe(25);
      expect(await collect(store, 'list/nothing/')).toEqual([]);
    });

    it('creates an object only if absent, atomically under a race', async () => {
      await store.put('lease/gc', pattern(64, 7), { ifNoneMatch: '*' });
      await expectCode(store.put('lease/gc', pattern(64, 8), { ifNoneMatch: '*' }), 'OBJECT_EXISTS');
      expect(Buffer.from(await store.get('lease/gc')).equals(Buffer.from(pattern(64, 7)))).toBe(true);
      if (!store.supports.conditionalCreate) return;
      const racers = Array.from({ length: 8 }, (_, i) =>
        store.put('lease/race', pattern(32, 100 + i), { ifNoneMatch: '*' }).then(
          () => i,
          (e: unknown) => (isChunkvaultError(e, 'OBJECT_EXISTS') ? -1 : Promise.reject(e)),
        ),
      );
      const winners = (await Promise.all(racers)).filter((i) => i >= 0);
      expect(winners.length).toBe(1);
      const seed = 100 + (winners[0] as number);
      expect(Buffer.from(await store.get('lease/race')).equals(Buffer.from(pattern(32, seed)))).toBe(true);
    });

    it('refuses a stream whose length is not the declared one, leaving nothing', async () => {
      const data = pattern(1000);
      await expectCode(store.put('len/short', { stream: streamOf(data, 100), length: 1001 }), 'INVALID_ARGUMENT');
      await expectCode(store.put('len/long', { stream: streamOf(data, 100), length: 999 }), 'INVALID_ARGUMENT');
      const big = pattern(11 * 1024 * 1024);
      await expectCode(store.put('len/large', { stream: streamOf(big), length: big.byteLength + 1024 * 1024 }), 'INVALID_ARGUMENT');
      expect(await store.head('len/short')).toBeUndefined();
      expect(await store.head('len/long')).toBeUndefined();
      expect(await store.head('len/large')).toBeUndefined();
    });

    it('refuses keys that are not portable', async () => {
      for (const key of ['', '/abs', 'a//b', 'a/../b', '.hidden', 'a/.tmp/x', 'sp ace', 'back\\slash', 'a/']) {
        await expectCode(store.put(key, pattern(1)), 'INVALID_ARGUMENT');
      }
    });

    // Only where the harness can damage an object at rest (a local file has no
    // checksum of its own to compare with; its integrity is the containers' hashes).
    if (options.corruptible) {
      it('detects an object damaged at rest', async () => {
        expect(store.supports.verifiedReads).toBe(true);
        expect(h.corrupt).toBeDefined();
        await store.put('rot/x', pattern(200_000, 9));
        await h.corrupt!('rot/x');
        await expectCode(store.get('rot/x'), 'OBJECT_CORRUPT');
      });
    }
  });
}
