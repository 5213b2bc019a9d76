/**
 * GC time and peak memory for repositories of growing size: one disk backed up
 * N times (full, then incrementals each rewriting ~2% in 1 MiB regions), the older
 * half forgotten, then `chunkvault gc` run as its own process under GNU time (wall,
 * CPU, peak RSS), followed by a second gc with nothing to do (the cost of the mark
 * alone). Peak RSS should not grow with N: the mark set and the condemned tables are
 * on disk.
 *
 *   npm run build && node dist/bench/gc.js [--quick] [--json FILE]
 */
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { backup, forget, Repository, type BlockSource, type PointRecord } from '../engine/index.js';
import { Rng } from './_data.js';
import { timed, dirSize } from './_e2e-exec.js';
import { bytes, machineInfo, parseArgs, printMachine, printTable, watchOtherLoad, writeJson } from './_report.js';

const MIB = 1024 * 1024;
const CLI = resolve(fileURLToPath(import.meta.url), '..', '..', 'src', 'cli', 'main.js');

class Disk implements BlockSource {
  constructor(readonly data: Buffer) {}
  get sizeBytes(): number {
    return this.data.length;
  }
  async readInto(target: Uint8Array, offset: number): Promise<void> {
    target.set(this.data.subarray(offset, offset + target.length));
  }
  describe(): string {
    return 'bench disk';
  }
  async close(): Promise<void> {}
}

/** Half text-like (compressible), half random, like a used file system. */
function initialDisk(rng: Rng, size: number): Buffer {
  const b = Buffer.alloc(size);
  rng.fill(b.subarray(0, size / 2));
  const words = Buffer.from('kernel disk block inode journal cache page memory service packet ');
  for (let at = size / 2; at < size; at += words.length) words.copy(b, at, 0, Math.min(words.length, size - at));
  return b;
}

function churn(rng: Rng, disk: Buffer, share: number): { offset: number; length: number }[] {
  const regions = Math.max(1, Math.round((disk.length * share) / MIB));
  const out = [];
  for (let i = 0; i < regions; i++) {
    const offset = rng.int(disk.length / MIB) * MIB;
    rng.fill(disk.subarray(offset, offset + MIB));
    out.push({ offset, length: MIB });
  }
  return out;
}

interface Row {
  points: number;
  forgotten: number;
  repoBytes: number;
  gcWallSec: number;
  gcCpuSec: number;
  gcMaxRssKiB: number;
  bytesFreed: number;
  chunksCondemned: number;
  idleGcWallSec: number;
  idleGcMaxRssKiB: number;
}

async function measure(template: string, work: string, points: number): Promise<Row> {
  const repoDir = join(work, `gc-${points}`);
  cpSync(template, repoDir, { recursive: true });
  const repo = await Repository.open(repoDir);
  const forgotten = Math.floor(points / 2);
  await forget(repo, { policy: { keepLast: points - forgotten } });
  await repo.close();
  const repoBytes = dirSize(repoDir).allocated;
  const first = timed(process.execPath, [CLI, 'gc', '--repo', repoDir, '--json'], join(work, 'time.txt'));
  const report = JSON.parse(first.stdout) as { bytesFreed: number; chunksCondemned: number };
  const idle = timed(process.execPath, [CLI, 'gc', '--repo', repoDir, '--json'], join(work, 'time.txt'));
  rmSync(repoDir, { recursive: true, force: true });
  return {
    points, forgotten, repoBytes,
    gcWallSec: first.wallSec, gcCpuSec: first.userSec + first.sysSec, gcMaxRssKiB: first.maxRssKiB,
    bytesFreed: report.bytesFreed, chunksCondemned: report.chunksCondemned,
    idleGcWallSec: idle.wallSec, idleGcMaxRssKiB: idle.maxRssKiB,
  };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const machine = machineInfo();
  printMachine(machine);
  const otherLoad = watchOtherLoad();
  const diskSize = (args.quick ? 64 : 256) * MIB;
  const sizes = args.quick ? [10, 20, 40] : [10, 50, 200];
  const work = mkdtempSync(join(tmpdir(), 'chunkvault-bench-gc-'));
  const rng = new Rng(11);
  try {
    const template = join(work, 'template');
    await Repository.init(template, {});
    const repo = await Repository.open(template);
    const disk = initialDisk(rng, diskSize);
    const rows: Row[] = [];
    let parent: PointRecord | null = null;
    for (let n = 1; n <= sizes[sizes.length - 1]!; n++) {
      const changed = parent ? churn(rng, disk, 0.02) : undefined;
      parent = await backup(repo, { source: new Disk(disk), vm: 'vm', disk: 'sda', parent, ...(changed ? { changed } : {}) });
      if (sizes.includes(n)) {
        await repo.close();
        rows.push(await measure(template, work, n));
        console.log(`measured ${n} points`);
      }
    }
    await repo.close();
    printTable(
      ['points', 'forgotten', 'repo before', 'gc wall', 'gc CPU', 'gc peak RSS', 'freed', 'condemned', 'idle gc wall', 'idle gc RSS'],
      rows.map((r) => [
        String(r.points), String(r.forgotten), bytes(r.repoBytes), `${r.gcWallSec.toFixed(2)} s`, `${r.gcCpuSec.toFixed(2)} s`,
        bytes(r.gcMaxRssKiB * 1024), bytes(r.bytesFreed), String(r.chunksCondemned), `${r.idleGcWallSec.toFixed(2)} s`, bytes(r.idleGcMaxRssKiB * 1024),
      ]),
    );
    console.log(`disk ${bytes(diskSize)}, 2% churn per point; other load ${(otherLoad() * 100).toFixed(0)}% of the machine`);
    if (args.json) writeJson(args.json, { machine, diskSize, rows });
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
