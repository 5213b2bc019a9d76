/**
 * A realistic raw disk image for the chunk-size study: ext4 made by `mke2fs -d` from
 * host files (free space stays zero), and "day 2" copies with seeded overwrites (new
 * file data in regions of one size, plus scattered 4 KiB metadata updates), at 4 KiB
 * aligned offsets like a guest filesystem would issue them.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, copyFileSync, mkdirSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { listFiles, MIB, Rng, syntheticVmData, WRITTEN_MIX } from './_data.js';

const PAGE = 4096;

export interface ImageInfo {
  readonly path: string;
  readonly sizeBytes: number;
  readonly files: number;
  readonly fileBytes: number;
}

/** Copies seeded-random host files (each <= 64 MiB) into `dir` until `budget` bytes. */
function stageFiles(dir: string, budget: number, seed: number): { files: number; bytes: number } {
  const all = new Rng(seed).shuffle(listFiles(['/usr/lib', '/usr/share', '/usr/bin']));
  let bytes = 0;
  let files = 0;
  for (const f of all) {
    const onDisk = Math.ceil(f.size / PAGE) * PAGE;
    if (f.size > 64 * MIB || bytes + onDisk > budget) continue;
    const dst = join(dir, f.path);
    try {
      mkdirSync(dirname(dst), { recursive: true });
      copyFileSync(f.path, dst);
    } catch {
      continue; // unreadable or a name clash with a directory: skip
    }
    bytes += onDisk;
    files++;
    if (bytes > budget - MIB) break;
  }
  return { files, bytes };
}

/**
 * Builds `<tmp>/day1.img` of `sizeBytes`, filled to about `fillRatio` with host files.
 * The staging copy is removed once the image exists.
 */
export function buildImage(tmp: string, sizeBytes: number, fillRatio: number, seed: number): ImageInfo {
  const staging = join(tmp, 'root');
  const path = join(tmp, 'day1.img');
  mkdirSync(staging, { recursive: true });
  try {
    const { files, bytes } = stageFiles(staging, Math.floor(sizeBytes * fillRatio), seed);
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', staging, path, `${sizeBytes / MIB}M`], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    return { path, sizeBytes, files, fileBytes: bytes };
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

/** One day of guest writes, all 4 KiB aligned at seeded random offsets. */
export interface WriteScenario {
  readonly name: string;
  /** Size of each "new data" write, and the share of the image they cover in total. */
  readonly writeSize: number;
  readonly changeRatio: number;
  /** Extra scattered 4 KiB writes (metadata updates). */
  readonly smallWrites: number;
}

export interface Day2Info {
  readonly scenario: WriteScenario;
  readonly path: string;
  readonly writes: number;
  /** Distinct bytes overwritten (4 KiB pages touched x 4 KiB). */
  readonly writtenBytes: number;
}

/**
 * Copies `day1` to `<tmp>/<scenario>.img` and applies the scenario's writes with
 * fresh synthetic data of the WRITTEN_MIX (new file content: no zero pages).
 */
export function makeDay2(tmp: string, day1: ImageInfo, scenario: WriteScenario, seed: number): Day2Info {
  const path = join(tmp, `${scenario.name}.img`);
  copyFileSync(day1.path, path);
  const rng = new Rng(seed);
  const writes = Math.round((day1.sizeBytes * scenario.changeRatio) / scenario.writeSize);
  const fresh = syntheticVmData(writes * scenario.writeSize + scenario.smallWrites * PAGE, seed ^ 0x5eed, WRITTEN_MIX);
  const pages = new Set<number>();
  const fd = openSync(path, 'r+');
  let src = 0;
  try {
    const write = (len: number): void => {
      const page = rng.int((day1.sizeBytes - len) / PAGE + 1);
      writeSync(fd, fresh, src, len, page * PAGE);
      src += len;
      for (let p = 0; p < len / PAGE; p++) pages.add(page + p);
    };
    for (let i = 0; i < writes; i++) write(scenario.writeSize);
    for (let i = 0; i < scenario.smallWrites; i++) write(PAGE);
  } finally {
    closeSync(fd);
  }
  return { scenario, path, writes: writes + scenario.smallWrites, writtenBytes: pages.size * PAGE };
}

/** Calls `visit(block, offset)` for each `blockSize` block of the file, in order (one reused buffer). */
export function readBlocks(path: string, blockSize: number, visit: (block: Buffer, offset: number) => void): void {
  const buf = Buffer.alloc(blockSize);
  const fd = openSync(path, 'r');
  try {
    for (let off = 0; ; off += blockSize) {
      let got = 0;
      while (got < blockSize) {
        const n = readSync(fd, buf, got, blockSize - got, off + got);
        if (n === 0) break;
        got += n;
      }
      if (got === 0) break;
      visit(buf.subarray(0, got), off);
      if (got < blockSize) break;
    }
  } finally {
    closeSync(fd);
  }
}
