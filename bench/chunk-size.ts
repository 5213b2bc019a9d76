/**
 * Picks the default chunk size by measurement on a realistic disk image:
 *
 *   node dist/bench/chunk-size.js [--quick] [--json FILE]
 *
 * Day 1: a 1 GiB ext4 image (256 MiB with --quick) made by mke2fs -d from host
 * files, ~80 % full, free space zero. Day 2: copies with ~5 % overwritten (seeded,
 * 4 KiB aligned): scenario "1M" as specified (1 MiB regions + 32 scattered 4 KiB
 * writes), and "64K" (the same volume in 64 KiB writes) to show how sensitive the
 * answer is to the write pattern. For each chunk size: zero / non-zero / unique
 * chunks (SHA-256), day-1 dedup, compressed size of the unique chunks (zstd-napi -1
 * and -3, lz4-napi; "store raw unless it saves 1/32"), what each incremental adds,
 * metadata, and single-core CPU seconds per GiB (process CPU time, so other work on
 * the machine disturbs it less than wall time). Everything lives in one directory
 * under the system temp dir, removed at the end.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lz4, storedSize, zstdCompress } from './_codecs.js';
import { GIB, isZero, KIB, MIB } from './_data.js';
import { buildImage, type Day2Info, type ImageInfo, makeDay2, readBlocks, type WriteScenario } from './_image.js';
import { bytes, machineInfo, parseArgs, printMachine, printTable, watchOtherLoad, writeJson } from './_report.js';

const SIZES = [64 * KIB, 128 * KIB, 256 * KIB, 512 * KIB, MIB, 2 * MIB, 4 * MIB];
const SEED = 0xd15c;
const SCENARIOS: WriteScenario[] = [
  { name: '1M', writeSize: MIB, changeRatio: 0.05, smallWrites: 32 },
  { name: '64K', writeSize: 64 * KIB, changeRatio: 0.05, smallWrites: 32 },
];
/** Index entry + its key, per unique chunk; map slot per chunk slot of every point. */
const INDEX_ENTRY = 45;
const INDEX_KEY = 32;
const MAP_SLOT = 32;
/** Retention model for the summary: a full plus this many daily incrementals like day 2. */
const MODEL_DAYS = 30;

type Codec = 'zstd1' | 'zstd3' | 'lz4';
const CODECS: Record<Codec, (b: Buffer) => number> = {
  zstd1: (b) => zstdCompress(b, { compressionLevel: 1 }).length,
  zstd3: (b) => zstdCompress(b, { compressionLevel: 3 }).length,
  lz4: (b) => lz4.compressSync(b).length,
};
const CODEC_NAMES = Object.keys(CODECS) as Codec[];

interface Day2Stats {
  changed: number;
  added: number;
  addedBytes: number;
  addedZstd1: number;
}

interface SizeStats {
  size: number;
  slots: number;
  nonZero: number;
  unique: number;
  uniqueBytes: number;
  stored: Record<Codec, number>;
  /** CPU seconds: zero test + SHA-256 over the whole image; each codec over unique chunks. */
  hashSec: number;
  codecSec: Record<Codec, number>;
  day2: Record<string, Day2Stats>;
}

function newStats(size: number): SizeStats {
  const day2: Record<string, Day2Stats> = {};
  for (const s of SCENARIOS) day2[s.name] = { changed: 0, added: 0, addedBytes: 0, addedZstd1: 0 };
  const perCodec = (): Record<Codec, number> => ({ zstd1: 0, zstd3: 0, lz4: 0 });
  return { size, slots: 0, nonZero: 0, unique: 0, uniqueBytes: 0, stored: perCodec(), hashSec: 0, codecSec: perCodec(), day2 };
}

const zeros = Buffer.alloc(4 * MIB);

/** Process CPU seconds (user + system): precise in sum on Linux. */
function cpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Zero test, then SHA-256; '' stands for an all-zero chunk (never stored). */
function digestOf(chunk: Buffer): string {
  return isZero(chunk, zeros) ? '' : createHash('sha256').update(chunk).digest('base64');
}

/** Day 1: every slot's digest, per size, with the unique chunks compressed by every codec. */
function scanDay1(day1: ImageInfo, stats: SizeStats[]): Map<number, string[]> {
  const maps = new Map<number, string[]>(stats.map((s) => [s.size, []]));
  const seen = new Map<number, Set<string>>(stats.map((s) => [s.size, new Set()]));
  readBlocks(day1.path, 4 * MIB, (block) => {
    for (const st of stats) {
      const map = maps.get(st.size) as string[];
      const set = seen.get(st.size) as Set<string>;
      for (let off = 0; off < block.length; off += st.size) {
        const chunk = block.subarray(off, off + st.size);
        const t0 = cpu();
        const d = digestOf(chunk);
        st.hashSec += cpu() - t0;
        map.push(d);
        st.slots++;
        if (d === '') continue;
        st.nonZero++;
        if (set.has(d)) continue;
        set.add(d);
        st.unique++;
        st.uniqueBytes += chunk.length;
        for (const codec of CODEC_NAMES) {
          const t1 = cpu();
          const n = CODECS[codec](chunk);
          st.codecSec[codec] += cpu() - t1;
          st.stored[codec] += storedSize(chunk.length, n);
        }
      }
    }
  });
  return maps;
}

/** Day 2: slots whose digest changed, and the chunks the index does not have yet. */
function scanDay2(day2: Day2Info, stats: SizeStats[], maps: Map<number, string[]>): void {
  const known = new Map<number, Set<string>>(stats.map((s) => [s.size, new Set(maps.get(s.size))]));
  const slot = new Map<number, number>(stats.map((s) => [s.size, 0]));
  readBlocks(day2.path, 4 * MIB, (block) => {
    for (const st of stats) {
      const map = maps.get(st.size) as string[];
      const set = known.get(st.size) as Set<string>;
      const out = st.day2[day2.scenario.name] as Day2Stats;
      let i = slot.get(st.size) as number;
      for (let off = 0; off < block.length; off += st.size, i++) {
        const chunk = block.subarray(off, off + st.size);
        const d = digestOf(chunk);
        if (d === map[i]) continue;
        out.changed++;
        if (d === '' || set.has(d)) continue;
        set.add(d);
        out.added++;
        out.addedBytes += chunk.length;
        out.addedZstd1 += storedSize(chunk.length, CODECS.zstd1(chunk));
      }
      slot.set(st.size, i);
    }
  });
}

function sizeLabel(n: number): string {
  return n >= MIB ? `${n / MIB}M` : `${n / KIB}K`;
}

/** Metadata, CPU per GiB and the retention model, derived from the measured counts. */
function derived(st: SizeStats, imageBytes: number) {
  const entry = INDEX_ENTRY + INDEX_KEY;
  const map = st.slots * MAP_SLOT;
  const uniqueGiB = st.uniqueBytes / GIB;
  const model: Record<string, number> = {};
  for (const [name, d] of Object.entries(st.day2)) {
    model[name] = st.stored.zstd1 + MODEL_DAYS * d.addedZstd1 + (st.unique + MODEL_DAYS * d.added) * entry + (MODEL_DAYS + 1) * map;
  }
  const hashSecPerGiB = st.hashSec / (imageBytes / GIB);
  const zstd1SecPerGiB = st.codecSec.zstd1 / uniqueGiB;
  return {
    index: st.unique * entry,
    map,
    mapPerTiB: (1024 * GIB * MAP_SLOT) / st.size,
    indexPerTiB: ((1024 * GIB) / st.size) * entry,
    model,
    hashSecPerGiB,
    zstd1SecPerGiB,
    zstd3SecPerGiB: st.codecSec.zstd3 / uniqueGiB,
    lz4SecPerGiB: st.codecSec.lz4 / uniqueGiB,
    /** Fresh data, one core: hash everything, compress it once. */
    freshSecPerGiB: hashSecPerGiB + zstd1SecPerGiB,
  };
}

function printResults(stats: SizeStats[], day1: ImageInfo, days: Day2Info[]): void {
  const ratio = (a: number, b: number): string => (a / b).toFixed(2);
  const f2 = (x: number): string => x.toFixed(2);
  const d = new Map(stats.map((s) => [s, derived(s, day1.sizeBytes)]));
  console.log('\nDay 1 (full) and metadata (index and map per TiB: for a 1 TiB disk of unique data)');
  printTable(
    ['chunk', 'slots', 'non-zero', 'unique', 'dedup', 'zstd-1', 'zstd-3', 'lz4', 'stored zstd-1', 'index', 'map/point', 'index/TiB', 'map/point/TiB'],
    stats.map((s) => {
      const x = d.get(s)!;
      return [
        sizeLabel(s.size), `${s.slots}`, `${s.nonZero}`, `${s.unique}`, ratio(s.nonZero, s.unique),
        ratio(s.uniqueBytes, s.stored.zstd1), ratio(s.uniqueBytes, s.stored.zstd3), ratio(s.uniqueBytes, s.stored.lz4),
        bytes(s.stored.zstd1), bytes(x.index), bytes(x.map), bytes(x.indexPerTiB), bytes(x.mapPerTiB),
      ];
    }),
  );
  for (const day of days) {
    const sc = day.scenario;
    console.log(`\nDay 2, scenario ${sc.name}: ${day.writes - sc.smallWrites} x ${bytes(sc.writeSize)} + ${sc.smallWrites} x 4 KiB writes = ${bytes(day.writtenBytes)} written`);
    printTable(
      ['chunk', 'changed', 'new chunks', 'added raw', 'amplification', 'added zstd-1', `${MODEL_DAYS}-day total`],
      stats.map((s) => {
        const x = s.day2[sc.name]!;
        return [sizeLabel(s.size), `${x.changed}`, `${x.added}`, bytes(x.addedBytes), `${ratio(x.addedBytes, day.writtenBytes)}x`, bytes(x.addedZstd1), `${(d.get(s)!.model[sc.name]! / MIB).toFixed(0)} MiB`];
      }),
    );
  }
  console.log('\nSingle-core CPU seconds per GiB (hash: zero test + SHA-256 per GiB of image; codecs: per GiB of unique data)');
  printTable(
    ['chunk', 'hash', 'zstd-1', 'zstd-3', 'lz4', 'hash+zstd-1', 'hash+zstd-3'],
    stats.map((s) => {
      const x = d.get(s)!;
      return [sizeLabel(s.size), f2(x.hashSecPerGiB), f2(x.zstd1SecPerGiB), f2(x.zstd3SecPerGiB), f2(x.lz4SecPerGiB), f2(x.freshSecPerGiB), f2(x.hashSecPerGiB + x.zstd3SecPerGiB)];
    }),
  );
}

/** Knee rule thresholds (see recommend()). */
const CPU_SLACK = 1.1;
const KNEE_SAVING = 0.15;

/** Storage saved by halving `from` to `to`: geometric mean over the write scenarios. */
function halvingSaving(from: ReturnType<typeof derived>, to: ReturnType<typeof derived>): number {
  const ratios = SCENARIOS.map((sc) => to.model[sc.name]! / from.model[sc.name]!);
  return 1 - Math.pow(ratios.reduce((a, b) => a * b, 1), 1 / ratios.length);
}

/**
 * The rule, stated so it can be argued with. Start at the largest size (least
 * metadata, fewest operations); halve it while that still cuts the modelled storage
 * (geometric mean over the write scenarios) by at least 15 % and keeps fresh-data CPU
 * (hash + zstd-1) within 10 % of the cheapest size. Each halving doubles index
 * entries, map slots, lookups and container records, so it has to pay for itself.
 */
function recommend(stats: SizeStats[], imageBytes: number): { pick: SizeStats; savings: string[] } {
  const d = new Map(stats.map((s) => [s, derived(s, imageBytes)]));
  const best = Math.min(...stats.map((s) => d.get(s)!.freshSecPerGiB));
  const bySize = [...stats].sort((a, b) => b.size - a.size);
  const savings: string[] = [];
  let pick: SizeStats | undefined = bySize[0]!;
  for (let i = 1; i < bySize.length; i++) {
    const [from, to] = [bySize[i - 1]!, bySize[i]!];
    const saving = halvingSaving(d.get(from)!, d.get(to)!);
    const cpuOk = d.get(to)!.freshSecPerGiB <= best * CPU_SLACK;
    savings.push(`${sizeLabel(from.size)}->${sizeLabel(to.size)} ${(saving * 100).toFixed(1)} %${cpuOk ? '' : ' (CPU over)'}`);
    if (pick === from && saving >= KNEE_SAVING && cpuOk) pick = to;
  }
  return { pick: pick ?? bySize[0]!, savings };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const machine = machineInfo();
  printMachine(machine);
  const otherLoad = watchOtherLoad();
  const imageBytes = args.quick ? 256 * MIB : GIB;
  const tmp = mkdtempSync(join(tmpdir(), 'chunkvault-chunksize-'));
  const t0 = Date.now();
  const lap = (): string => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
  try {
    const day1 = buildImage(tmp, imageBytes, 0.8, SEED);
    console.log(`image ${bytes(imageBytes)}: ${day1.files} files, ${bytes(day1.fileBytes)} (built at ${lap()})`);
    const days = SCENARIOS.map((sc, i) => makeDay2(tmp, day1, sc, SEED + 1 + i));
    const stats = SIZES.map(newStats);
    const maps = scanDay1(day1, stats);
    console.log(`day 1 scanned at ${lap()}`);
    for (const day of days) scanDay2(day, stats, maps);
    printResults(stats, day1, days);
    const { pick, savings } = recommend(stats, imageBytes);
    console.log(`\nstorage saved per halving (${MODEL_DAYS}-day model, geometric mean of the scenarios): ${savings.join(', ')}`);
    console.log(`rule: from 4M down, halve while that saves >= ${KNEE_SAVING * 100} % and hash+zstd-1 CPU stays within ${Math.round((CPU_SLACK - 1) * 100)} % of the best`);
    console.log(`recommended default chunk size: ${sizeLabel(pick.size)}`);
    const others = otherLoad();
    console.log(`total ${lap()}; other processes kept ${others.toFixed(2)} cores busy on average`);
    if (args.json) {
      const rows = stats.map((s) => ({ ...s, ...derived(s, imageBytes) }));
      writeJson(args.json, { machine, otherCores: others, quick: args.quick, image: day1, days, modelDays: MODEL_DAYS, recommended: pick.size, rows });
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
