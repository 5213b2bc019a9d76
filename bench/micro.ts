/**
 * Micro benchmarks of the hot-path primitives, single core, on VM-like data:
 * chunk hashing, zstd and LZ4 (native vs wasm, the engine's LZ4 addon vs the `lz4`
 * package), a worker's prepare task (native vs JavaScript), zero-chunk detection, copies between
 * shared memories (TypedArray.set against the arena's memory.copy), and index
 * access patterns on classic-level. Compare with the "Physical limits" table of the
 * architecture brief; bench/RESULTS.md records a run and the defaults it led to.
 *
 *   node dist/bench/micro.js [--quick] [--json FILE]
 *
 * Throughput is raw (uncompressed) bytes per second, decimal GB. One benchmark.js
 * operation processes a whole data set (every chunk once), so each library sees the
 * same bytes. All-zero chunks are left out of the compression sets: the engine never
 * compresses them (they are a sentinel in the point's map).
 */
import Benchmark from 'benchmark';
import { createHash } from 'node:crypto';
import xxhashInit from 'xxhash-wasm';
import { createRequire } from 'node:module';
import { type Codec, loadCodecs, storedSize } from './_codecs.js';
import { chunksOf, isZero, KIB, MIB, realFilesData, syntheticVmData } from './_data.js';
import { benchLevel } from './_level.js';
import { PREPARE_VARIANTS, prepareBench, slabResults } from './_prepare.js';
import { allocArenaBlock, copyBytes } from '../engine/shared-arena.js';
import { gbps, machineInfo, median, opsps, parseArgs, printMachine, printTable, watchOtherLoad, writeJson } from './_report.js';

const SEED = 0xc0ffee;

interface Row {
  group: string;
  name: string;
  data: string;
  /** Bytes per second, or operations per second when `unit` is 'ops/s'. */
  rate: number;
  unit: 'B/s' | 'ops/s';
  /** Relative margin of error (%), benchmark.js; absent for directly timed rows. */
  rme?: number;
  /** raw / stored bytes (compression rows). */
  ratio?: number;
  /** "x vs y": this row's rate over its reference row's rate. */
  vs?: string;
  roundTrip?: boolean;
}

interface Settings {
  readonly maxTime: number;
  readonly minSamples: number;
}

/** Runs one synchronous benchmark.js benchmark; returns operations per second and rme. */
function measure(name: string, fn: () => void, s: Settings): { hz: number; rme: number } {
  const b = new Benchmark(name, fn, { maxTime: s.maxTime, minSamples: s.minSamples, initCount: 1 });
  b.run();
  if (b.error) throw b.error;
  return { hz: b.hz, rme: b.stats.rme };
}

function totalBytes(chunks: readonly Buffer[]): number {
  return chunks.reduce((n, c) => n + c.length, 0);
}

let sink = 0; // keeps results observable so nothing is optimised away

async function benchHashing(sample: Buffer, s: Settings): Promise<Row[]> {
  const xx = await xxhashInit();
  const addon = (createRequire(import.meta.url)('xxhash-addon') as { XXHash64: { hash(b: Uint8Array): Uint8Array } }).XXHash64;
  const fns: [string, (b: Buffer) => void][] = [
    ['SHA-256 (node:crypto)', (b) => (sink ^= createHash('sha256').update(b).digest()[0] as number)],
    ['XXH64 (xxhash-addon, native)', (b) => (sink ^= addon.hash(b)[7] as number)],
    ['XXH64 (xxhash-wasm h64Raw)', (b) => (sink ^= Number(xx.h64Raw(b, 0n) & 0xffn))],
    ['XXH32 (xxhash-wasm h32Raw)', (b) => (sink ^= xx.h32Raw(b, 0))],
  ];
  const rows: Row[] = [];
  const names = Object.keys(xx).filter((k) => k.endsWith('Raw'));
  console.log(`xxhash-wasm exports ${names.join(', ')}: no XXH3, so XXH3 is not measured`);
  for (const size of [64 * KIB, MIB, 4 * MIB]) {
    const chunks = chunksOf(sample, size);
    const bytes = totalBytes(chunks);
    const label = `${size / KIB} KiB chunks`;
    for (const [name, fn] of fns) {
      const r = measure(name, () => chunks.forEach(fn), s);
      rows.push({ group: 'hash', name, data: label, rate: r.hz * bytes, unit: 'B/s', rme: r.rme });
    }
    const sha = rows.at(-3) as Row;
    for (const row of rows.slice(-2)) row.vs = `${(row.rate / sha.rate).toFixed(1)}x vs SHA-256`;
  }
  return rows;
}

/** Compresses every chunk once: stored ratio, round-trip check, and the packed set. */
function prepare(codec: Codec, chunks: readonly Buffer[]): { packed: Uint8Array[]; ratio: number; ok: boolean } {
  let raw = 0;
  let stored = 0;
  let ok = true;
  const packed = chunks.map((c) => {
    const p = codec.compress(c);
    raw += c.length;
    stored += storedSize(c.length, p.length);
    if (!Buffer.from(codec.decompress(p)).equals(c)) ok = false;
    return p;
  });
  return { packed, ratio: raw / stored, ok };
}

function benchCodecs(codecs: readonly Codec[], data: string, chunks: readonly Buffer[], s: Settings): Row[] {
  const bytes = totalBytes(chunks);
  const rows: Row[] = [];
  for (const codec of codecs) {
    const { packed, ratio, ok } = prepare(codec, chunks);
    const c = measure(`${codec.name} compress`, () => chunks.forEach((x) => (sink ^= codec.compress(x).length)), s);
    const d = measure(`${codec.name} decompress`, () => packed.forEach((x) => (sink ^= codec.decompress(x).length)), s);
    const base = { group: 'compress', data, unit: 'B/s' as const, ratio, roundTrip: ok };
    rows.push({ ...base, name: `${codec.name} compress`, rate: c.hz * bytes, rme: c.rme });
    rows.push({ ...base, name: `${codec.name} decompress`, rate: d.hz * bytes, rme: d.rme });
  }
  for (const codec of codecs) {
    if (!codec.peer) continue;
    for (const op of ['compress', 'decompress']) {
      const mine = rows.find((r) => r.name === `${codec.name} ${op}`);
      const peer = rows.find((r) => r.name === `${codec.peer} ${op}`);
      if (mine && peer) mine.vs = `${(mine.rate / peer.rate).toFixed(2)}x vs ${codec.peer}`;
    }
  }
  return rows;
}

/** Lossless round trip between the two LZ4 libraries (same lz4_flex size-prefixed block format). */
function lz4CrossCheck(codecs: readonly Codec[], chunks: readonly Buffer[]): boolean {
  const a = codecs.find((c) => c.name === 'lz4-napi');
  const b = codecs.find((c) => c.name === 'lz4-wasm');
  if (!a || !b) return false;
  return chunks.every(
    (c) => Buffer.from(b.decompress(a.compress(c))).equals(c) && Buffer.from(a.decompress(b.compress(c))).equals(c),
  );
}

function benchZero(s: Settings): Row[] {
  const zeros = Buffer.alloc(MIB);
  const buf = Buffer.alloc(MIB); // worst case: all zero, so every method scans it all
  const u32 = new Uint32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  const loop32 = (): boolean => {
    for (let i = 0; i < u32.length; i += 16) {
      let acc = 0;
      for (let j = i; j < i + 16; j++) acc |= u32[j] as number;
      if (acc !== 0) return false;
    }
    return true;
  };
  const loop8 = (): boolean => {
    for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false;
    return true;
  };
  const fns: [string, () => boolean][] = [
    ['Buffer.compare vs zero buffer', () => Buffer.compare(buf, zeros) === 0],
    ['buf.equals(zero buffer)', () => isZero(buf, zeros)],
    ['Uint32Array OR loop', loop32],
    ['Uint8Array loop', loop8],
  ];
  const rows: Row[] = fns.map(([name, fn]) => {
    const r = measure(name, () => (sink ^= fn() ? 1 : 0), s);
    return { group: 'zero', name, data: '1 MiB zero chunk', rate: r.hz * MIB, unit: 'B/s', rme: r.rme };
  });
  const ref = rows.find((r) => r.name === 'Uint32Array OR loop') as Row;
  for (const r of rows) if (r !== ref) r.vs = `${(r.rate / ref.rate).toFixed(1)}x vs Uint32 loop`;
  return rows;
}

/**
 * Copying 256 KiB payloads at unaligned offsets from a 32 MiB area into another, as the
 * backup moves payloads from window slabs into container stages: ordinary memory,
 * shared memory with `set`, and the arena's memory.copy.
 */
function benchCopy(s: Settings): Row[] {
  const n = 256 * KIB;
  const area = 32 * MIB; // larger than the caches, like a backup's slabs and stages
  const pairs: [string, () => Uint8Array, (d: Uint8Array, at: number, src: Uint8Array) => void][] = [
    ['set, ArrayBuffer -> ArrayBuffer', () => new Uint8Array(area), (d, at, src) => d.set(src, at)],
    ['set, SharedArrayBuffer -> SharedArrayBuffer', () => new Uint8Array(new SharedArrayBuffer(area)), (d, at, src) => d.set(src, at)],
    ['set, arena -> arena', () => allocArenaBlock(area), (d, at, src) => d.set(src, at)],
    ['copyBytes (memory.copy), arena -> arena', () => allocArenaBlock(area), copyBytes],
  ];
  const slots = area / n - 1;
  const rows: Row[] = pairs.map(([name, make, copy]) => {
    const src = make().fill(7);
    const dst = make().fill(1);
    let k = 0;
    const r = measure(name, () => {
      k = (k + 1) % slots;
      // Offsets that differ modulo 8 (as a payload and its place in a stage usually do), a different 256 KiB each time.
      copy(dst, k * n + 3, src.subarray(k * n + 14, k * n + 14 + n));
      sink ^= dst[k * n + 3] ?? 0;
    }, s);
    return { group: 'copy', name, data: '256 KiB payloads across 32 MiB', rate: r.hz * n, unit: 'B/s', rme: r.rme };
  });
  const ref = rows[1] as Row;
  for (const r of rows) if (r !== ref) r.vs = `${(r.rate / ref.rate).toFixed(1)}x vs shared set`;
  return rows;
}

/**
 * A worker task on one slab of 256 KiB slots (the default chunk size): the native call
 * against the JavaScript path it replaced. Accel 1 must give the JavaScript path's
 * results exactly; hash only must give its digests. The variants take turns (rounds of
 * a few passes each, the median round reported) rather than one benchmark.js run after
 * another, which on this VM favoured whichever ran first by up to 15 %.
 */
async function benchPrepare(data: Buffer, s: Settings): Promise<Row[]> {
  const b = await prepareBench(data, 256 * KIB);
  try {
    const [js, accel1, , hashOnly] = PREPARE_VARIANTS;
    const ref = slabResults(b, js!, true);
    const same = slabResults(b, accel1!, true).equals(ref);
    const sameHashes = slabResults(b, hashOnly!, false).equals(slabResults(b, js!, false));
    const rounds = Math.max(3, s.minSamples);
    const passes = Math.max(1, Math.round(s.maxTime * 3));
    const rates = PREPARE_VARIANTS.map(() => [] as number[]);
    for (let r = 0; r < rounds; r++) {
      PREPARE_VARIANTS.forEach((v, k) => {
        const t0 = process.hrtime.bigint();
        for (let p = 0; p < passes; p++) v.run(b.slab, b.slots);
        rates[k]!.push((passes * b.bytes) / (Number(process.hrtime.bigint() - t0) / 1e9));
      });
    }
    const label = `${b.slots.length} x 256 KiB slots, median of ${rounds} rounds`;
    const rows: Row[] = PREPARE_VARIANTS.map((v, k) => {
      v.run(b.slab, b.slots);
      const stored = b.stored();
      const roundTrip = v === accel1 ? same : v === hashOnly ? sameHashes : undefined;
      const ratio = stored > 0 && v !== hashOnly ? b.bytes / stored : undefined;
      return { group: 'prepare', name: v.name, data: label, rate: median(rates[k]!), unit: 'B/s', ratio, roundTrip };
    });
    for (const r of rows.slice(1)) r.vs = `${(r.rate / rows[0]!.rate).toFixed(2)}x vs JS`;
    return rows;
  } finally {
    b.dispose();
  }
}

function printRows(rows: readonly Row[]): void {
  const fmt = (r: Row): string => (r.unit === 'ops/s' ? opsps(r.rate) : gbps(r.rate));
  printTable(
    ['group', 'name', 'data', 'throughput', '±%', 'ratio', 'vs reference', 'round trip'],
    rows.map((r) => [
      r.group,
      r.name,
      r.data,
      fmt(r),
      r.rme === undefined ? '' : r.rme.toFixed(1),
      r.ratio === undefined ? '' : r.ratio.toFixed(2),
      r.vs ?? '',
      r.roundTrip === undefined ? '' : r.roundTrip ? 'ok' : 'FAILED',
    ]),
  );
}

const QUICK = { synth: 8 * MIB, real: 16 * MIB, keys: 50_000, lookups: 20_000, maxTime: 0.15, minSamples: 3 };
const FULL = { synth: 32 * MIB, real: 64 * MIB, keys: 200_000, lookups: 200_000, maxTime: 1.5, minSamples: 5 };

async function benchIndex(keys: number, lookups: number): Promise<Row[]> {
  const rows: Row[] = (await benchLevel(keys, lookups, SEED)).map((r) => ({
    group: 'index', name: r.name, data: `${keys / 1000}k keys, ${r.ops / 1000}k ops`, rate: r.opsPerSec, unit: 'ops/s',
  }));
  const ref = rows.find((r) => r.name === 'get, awaited one by one') as Row;
  for (const r of rows) {
    if (r !== ref && r.name.startsWith('get') && !r.name.includes('misses')) r.vs = `${(r.rate / ref.rate).toFixed(1)}x vs get`;
  }
  return rows;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const machine = machineInfo();
  printMachine(machine);
  const otherLoad = watchOtherLoad();
  const cfg = args.quick ? QUICK : FULL;
  const s: Settings = { maxTime: cfg.maxTime, minSamples: cfg.minSamples };
  const t0 = Date.now();
  const zeros = Buffer.alloc(MIB);
  const synth = syntheticVmData(cfg.synth, SEED);
  const real = realFilesData(cfg.real, SEED);
  const nonZero = (d: Buffer): Buffer[] => chunksOf(d, MIB).filter((c) => !isZero(c, zeros));
  const sets: [string, Buffer[]][] = [
    [`synthetic ${cfg.synth / MIB} MiB`, nonZero(synth)],
    [`real files ${cfg.real / MIB} MiB`, nonZero(real)],
  ];
  console.log(`data ready in ${Date.now() - t0} ms; non-zero 1 MiB chunks: ${sets.map(([n, c]) => `${n}: ${c.length}`).join(', ')}`);
  const codecs = await loadCodecs();
  const rows: Row[] = [];
  rows.push(...(await benchHashing(real.subarray(0, Math.min(real.length, 32 * MIB)), s)));
  for (const [name, chunks] of sets) rows.push(...benchCodecs(codecs, name, chunks, s));
  rows.push(...(await benchPrepare(real, s)));
  const lz4Compatible = lz4CrossCheck(codecs, sets[1]?.[1] ?? []);
  rows.push(...benchZero(s));
  rows.push(...benchCopy(s));
  rows.push(...(await benchIndex(cfg.keys, cfg.lookups)));
  printRows(rows);
  console.log(`lz4-napi <-> lz4-wasm cross round trip: ${lz4Compatible ? 'ok' : 'FAILED'}`);
  const others = otherLoad();
  console.log(`total ${((Date.now() - t0) / 1000).toFixed(1)} s; other processes kept ${others.toFixed(2)} cores busy on average (sink ${sink & 1})`);
  if (args.json) writeJson(args.json, { machine, otherCores: others, quick: args.quick, config: cfg, lz4Compatible, rows });
}

await main();
