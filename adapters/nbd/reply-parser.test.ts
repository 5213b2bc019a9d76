// The reply parser with the in-flight table as its sink: replies split at every byte
// and at random points, interleaved and coalesced, and malformed replies.
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { ChunkvaultError } from '../../engine/errors.js';
import { Coverage, InflightTable } from './inflight.js';
import { REPLY_FLAG, REPLY_TYPE, type ReplyChunk, encodeChunk, encodeChunkHeader, encodeSimpleReply } from './protocol.js';
import { ReplyParser } from './reply-parser.js';

const DONE = REPLY_FLAG.DONE;

function setup(options: { structured?: boolean; timeoutMs?: number } = {}) {
  const onTimeout = vi.fn();
  const table = new InflightTable({
    structured: options.structured ?? true,
    contextIds: new Set([1, 2]),
    timeoutMs: options.timeoutMs ?? 60_000,
    onTimeout,
  });
  return { table, parser: new ReplyParser(table), onTimeout };
}

function pattern(offset: number, length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (offset + i) * 31 + 7);
}

/** A small deterministic PRNG so fast-check's seed drives shuffles. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffle<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j] as T, items[i] as T];
  }
  return items;
}

/** Reply chunks for a read: random data/hole pieces in random order, DONE on the last. */
function readReply(cookie: bigint, offset: number, length: number, random: () => number): Uint8Array[] {
  const cuts = new Set<number>([offset, offset + length]);
  const pieces = Math.floor(random() * 4);
  for (let i = 0; i < pieces; i++) cuts.add(offset + 1 + Math.floor(random() * (length - 1)));
  const points = [...cuts].sort((a, b) => a - b);
  const chunks: ReplyChunk[] = [];
  for (let i = 0; i + 1 < points.length; i++) {
    const from = points[i] as number;
    const to = points[i + 1] as number;
    chunks.push(random() < 0.3 ? { kind: 'hole', offset: from, length: to - from } : { kind: 'data', offset: from, data: pattern(from, to - from) });
  }
  shuffle(chunks, random);
  const withNone = random() < 0.5;
  if (withNone) chunks.push({ kind: 'none' });
  return chunks.map((chunk, i) => encodeChunk(i === chunks.length - 1 ? DONE : 0, cookie, chunk));
}

function expected(offset: number, length: number, chunksBytes: Uint8Array[]): Uint8Array {
  // Rebuild what the target must hold: data where data chunks were, zeros elsewhere.
  const out = new Uint8Array(length);
  for (const bytes of chunksBytes) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (view.getUint16(6) !== REPLY_TYPE.OFFSET_DATA) continue;
    const at = Number(view.getBigUint64(20)) - offset;
    out.set(bytes.subarray(28), at);
  }
  return out;
}

/** Splits `stream` into segments at random points (possibly every byte). */
function split(stream: Uint8Array, random: () => number, everyByte: boolean): Uint8Array[] {
  if (everyByte) return Array.from(stream, (b) => Uint8Array.of(b));
  const segments: Uint8Array[] = [];
  for (let at = 0; at < stream.byteLength; ) {
    const n = 1 + Math.floor(random() * 40);
    segments.push(stream.subarray(at, at + n));
    at += n;
  }
  return segments;
}

describe('ReplyParser + InflightTable', () => {
  const requestArb = fc.array(
    fc.record({ offset: fc.integer({ min: 0, max: 1 << 20 }), length: fc.integer({ min: 1, max: 300 }) }),
    { minLength: 1, maxLength: 6 },
  );

  it.each([
    ['byte by byte', true],
    ['in random splits', false],
  ])('assembles interleaved structured reads fed %s', async (_name, everyByte) => {
    await fc.assert(
      fc.asyncProperty(requestArb, fc.nat(), async (requests, seed) => {
        const random = prng(seed);
        const { table, parser } = setup();
        const pending = requests.map(({ offset, length }) => {
          const target = new Uint8Array(length).fill(0xee);
          const { cookie, done } = table.addRead(offset, target);
          const chunks = readReply(cookie, offset, length, random);
          return { target, done, chunks, want: expected(offset, length, chunks) };
        });
        // Interleave the requests' chunk lists, keeping each list's own order.
        const queues = pending.map((p) => [...p.chunks]);
        const stream: Uint8Array[] = [];
        while (queues.some((q) => q.length > 0)) {
          const live = queues.filter((q) => q.length > 0);
          stream.push((live[Math.floor(random() * live.length)] as Uint8Array[]).shift() as Uint8Array);
        }
        for (const segment of split(Buffer.concat(stream), random, everyByte)) parser.push(segment);
        await Promise.all(pending.map((p) => p.done));
        for (const p of pending) expect(p.target).toEqual(p.want);
        expect(table.size).toBe(0);
        expect(parser.buffered).toBe(0);
      }),
      { numRuns: everyByte ? 30 : 200 },
    );
  });

  it('assembles simple replies split at every byte', async () => {
    const { table, parser } = setup({ structured: false });
    const a = new Uint8Array(100);
    const b = new Uint8Array(7);
    const ra = table.addRead(0, a);
    const rb = table.addRead(500, b);
    const rc = table.addRead(900, new Uint8Array(10));
    const stream = Buffer.concat([
      encodeSimpleReply({ errno: 0, cookie: rb.cookie }),
      pattern(500, 7),
      encodeSimpleReply({ errno: 5, cookie: rc.cookie }),
      encodeSimpleReply({ errno: 0, cookie: ra.cookie }),
      pattern(0, 100),
    ]);
    for (const byte of stream) parser.push(Uint8Array.of(byte));
    await Promise.all([ra.done, rb.done]);
    await expect(rc.done).rejects.toMatchObject({ code: 'REMOTE_ERROR', details: { errno: 'EIO', offset: 900, length: 10 } });
    expect(a).toEqual(pattern(0, 100));
    expect(b).toEqual(pattern(500, 7));
  });

  it('collects block status per context id', async () => {
    const { table, parser } = setup();
    const { cookie, done } = table.addBlockStatus(4096, 8192);
    parser.push(encodeChunk(0, cookie, { kind: 'block-status', contextId: 2, descriptors: [{ length: 8192, flags: 1 }] }));
    parser.push(
      encodeChunk(DONE, cookie, {
        kind: 'block-status',
        contextId: 1,
        descriptors: [
          { length: 4096, flags: 3 },
          { length: 9999, flags: 0 },
        ],
      }),
    );
    const reply = await done;
    expect(reply.get(1)).toEqual([
      { length: 4096, flags: 3 },
      { length: 4096, flags: 0 },
    ]);
    expect(reply.get(2)).toEqual([{ length: 8192, flags: 1 }]);
  });

  it('fails a read with REMOTE_ERROR when an error chunk came, after DONE', async () => {
    const { table, parser } = setup();
    const { cookie, done } = table.addRead(0, new Uint8Array(10));
    parser.push(encodeChunk(0, cookie, { kind: 'error', errno: 28, message: 'full', offset: 4 }));
    parser.push(encodeChunk(DONE, cookie, { kind: 'none' }));
    await expect(done).rejects.toMatchObject({ code: 'REMOTE_ERROR', details: { errno: 'ENOSPC', errorOffset: 4, message: 'full' } });
  });

  it('times a request out with TIMEOUT and tells the owner', async () => {
    const { table, onTimeout } = setup({ timeoutMs: 10 });
    const { done } = table.addRead(0, new Uint8Array(1));
    await expect(done).rejects.toMatchObject({ code: 'TIMEOUT', details: { timeoutMs: 10 } });
    expect(onTimeout).toHaveBeenCalledOnce();
    expect(table.size).toBe(0);
  });

  it('rejects every pending request on failAll', async () => {
    const { table } = setup();
    const one = table.addRead(0, new Uint8Array(1)).done;
    const two = table.addBlockStatus(0, 512).done;
    table.failAll(new ChunkvaultError('CONNECT_FAILED', 'gone'));
    await expect(one).rejects.toMatchObject({ code: 'CONNECT_FAILED' });
    await expect(two).rejects.toMatchObject({ code: 'CONNECT_FAILED' });
  });
});

describe('malformed replies', () => {
  function malformed(build: (cookie: bigint, table: InflightTable) => Uint8Array, message?: RegExp): void {
    const { table, parser } = setup();
    const { cookie, done } = table.addRead(1000, new Uint8Array(100));
    done.catch(() => undefined);
    const stream = build(cookie, table);
    let error: unknown = null;
    try {
      for (const byte of stream) parser.push(Uint8Array.of(byte));
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ChunkvaultError);
    expect(error).toMatchObject({ code: 'PROTOCOL_ERROR' });
    if (message) expect((error as Error).message).toMatch(message);
    expect(parser.failed).toBe(true);
    // Sticky: later input rethrows the same error.
    expect(() => parser.push(Uint8Array.of(0))).toThrow(error as Error);
  }

  it('bad magic', () => malformed(() => Uint8Array.of(0x12, 0x34, 0x56, 0x78), /bad reply magic/));

  it('unknown cookie', () =>
    malformed((cookie) => encodeChunk(DONE, cookie + 1n, { kind: 'hole', offset: 1000, length: 100 }), /unknown cookie/));

  it('data chunk beyond the request', () =>
    malformed((cookie) => encodeChunk(DONE, cookie, { kind: 'data', offset: 1050, data: new Uint8Array(51) }), /outside/));

  it('hole before the request', () =>
    malformed((cookie) => encodeChunk(DONE, cookie, { kind: 'hole', offset: 999, length: 2 }), /outside/));

  it('overlapping chunks', () =>
    malformed(
      (cookie) =>
        Buffer.concat([
          encodeChunk(0, cookie, { kind: 'hole', offset: 1000, length: 50 }),
          encodeChunk(DONE, cookie, { kind: 'data', offset: 1049, data: new Uint8Array(51) }),
        ]),
      /overlaps/,
    ));

  it('OFFSET_DATA chunk shorter than its offset', () =>
    malformed((cookie) => encodeChunkHeader({ flags: DONE, type: REPLY_TYPE.OFFSET_DATA, cookie, length: 8 }), /shorter/));

  it('hole chunk of the wrong length', () =>
    malformed((cookie) =>
      Buffer.concat([encodeChunkHeader({ flags: DONE, type: REPLY_TYPE.OFFSET_HOLE, cookie, length: 16 }), new Uint8Array(16)]),
    ));

  it('oversized chunk payload (rejected from the header alone)', () =>
    malformed((cookie) => encodeChunkHeader({ flags: DONE, type: REPLY_TYPE.BLOCK_STATUS, cookie, length: 0xffffffff }), /payload/));

  it('NONE chunk without DONE', () => malformed((cookie) => encodeChunk(0, cookie, { kind: 'none' }), /DONE/));

  it('block status chunk for a read', () =>
    malformed((cookie) => encodeChunk(DONE, cookie, { kind: 'block-status', contextId: 1, descriptors: [{ length: 1, flags: 0 }] })));

  it('block status for a context id never negotiated', () => {
    const { table, parser } = setup();
    const { cookie, done } = table.addBlockStatus(0, 512);
    done.catch(() => undefined);
    const chunk = encodeChunk(DONE, cookie, { kind: 'block-status', contextId: 9, descriptors: [{ length: 512, flags: 0 }] });
    expect(() => parser.push(chunk)).toThrow(expect.objectContaining({ code: 'PROTOCOL_ERROR' }));
  });

  it('a read reply that ends early settles with PROTOCOL_ERROR', async () => {
    const { table, parser } = setup();
    const { cookie, done } = table.addRead(0, new Uint8Array(10));
    parser.push(encodeChunk(DONE, cookie, { kind: 'hole', offset: 0, length: 5 }));
    await expect(done).rejects.toMatchObject({ code: 'PROTOCOL_ERROR', message: expect.stringMatching(/covered 5 of 10/) });
  });
});

describe('Coverage', () => {
  it('accepts disjoint ranges in any order and refuses overlaps', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 30 }), fc.nat(), (lengths, seed) => {
        const ranges: Array<[number, number]> = [];
        let at = 0;
        for (const length of lengths) {
          ranges.push([at, at + length]);
          at += length;
        }
        const coverage = new Coverage();
        for (const [start, end] of shuffle([...ranges], prng(seed))) expect(coverage.add(start, end)).toBe(true);
        expect(coverage.total).toBe(at);
        for (const [start, end] of ranges) expect(coverage.add(start, end)).toBe(false);
        expect(coverage.add(Math.max(0, at - 1), at + 1)).toBe(false);
      }),
    );
  });
});
