/**
 * The two disk images of the end-to-end benchmark.
 *
 * Day 1: a raw image of a real ext4 filesystem (`mke2fs -d`, bench/_image.ts) filled
 * with host files; its free space is zero. It is written out densely (every block
 * allocated, like a block device or a preallocated image), so every tool reads every
 * byte through read(2) and none gets holes for free.
 *
 * Day 2: a dense copy with about 5 % overwritten by new data: 1 MiB writes at seeded,
 * 4 KiB aligned offsets plus a few scattered 4 KiB writes (metadata updates). Every
 * write is recorded as a changed extent `{offset, length}`, as a hypervisor's CBT
 * would report it (overlaps allowed; consumers normalise them).
 */
import { closeSync, mkdirSync, openSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { MIB, Rng, syntheticVmData, WRITTEN_MIX } from './_data.js';
import { buildImage } from './_image.js';

const PAGE = 4096;
const BLOCK = 8 * MIB;
/** Granularity of the zero census reported with the image (the engine's default chunk). */
const ZERO_GRAIN = 256 * 1024;

export interface Extent {
  readonly offset: number;
  readonly length: number;
}

export interface Day1 {
  readonly path: string;
  readonly sizeBytes: number;
  readonly files: number;
  readonly fileBytes: number;
  /** Share of 256 KiB blocks that are all zero. */
  readonly zeroShare: number;
}

export interface Day2 {
  readonly path: string;
  readonly extentsFile: string;
  readonly extents: readonly Extent[];
  readonly bigWrites: number;
  readonly smallWrites: number;
  /** Distinct bytes overwritten (4 KiB pages touched x 4 KiB). */
  readonly changedBytes: number;
}

/**
 * Copies `src` to `dst` with explicit writes of every block (zeros included), so the
 * copy is dense whatever `src` is. Calls `visit` on each block read.
 */
function denseCopy(src: string, dst: string, visit: (block: Buffer) => void = () => undefined): void {
  const buf = Buffer.allocUnsafe(BLOCK);
  const inFd = openSync(src, 'r');
  const outFd = openSync(dst, 'w');
  try {
    for (let off = 0; ; ) {
      const n = readSync(inFd, buf, 0, BLOCK, off);
      if (n === 0) break;
      visit(buf.subarray(0, n));
      for (let w = 0; w < n; ) w += writeSync(outFd, buf, w, n - w, off + w);
      off += n;
    }
  } finally {
    closeSync(inFd);
    closeSync(outFd);
  }
}

/** Builds `<dir>/day1.img`: ext4 of `sizeBytes` filled to about `fill` with host files, dense. */
export function buildDay1(dir: string, sizeBytes: number, fill: number, seed: number): Day1 {
  const work = join(dir, 'mke2fs');
  mkdirSync(work, { recursive: true });
  const path = join(dir, 'day1.img');
  const zeros = Buffer.alloc(ZERO_GRAIN);
  let grains = 0;
  let zeroGrains = 0;
  try {
    const img = buildImage(work, sizeBytes, fill, seed);
    denseCopy(img.path, path, (b) => {
      for (let o = 0; o < b.length; o += ZERO_GRAIN) {
        grains++;
        if (b.subarray(o, o + ZERO_GRAIN).equals(zeros.subarray(0, Math.min(ZERO_GRAIN, b.length - o)))) zeroGrains++;
      }
    });
    return { path, sizeBytes, files: img.files, fileBytes: img.fileBytes, zeroShare: zeroGrains / grains };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Sorts extents by offset (the order a CBT query returns them). */
function sorted(extents: Extent[]): Extent[] {
  return extents.sort((a, b) => a.offset - b.offset || a.length - b.length);
}

/**
 * Writes `<dir>/day2.img` (a dense copy of day 1 with `changeRatio` of it overwritten
 * in `writeSize` regions plus `smallWrites` 4 KiB writes) and `<dir>/day2.extents.json`.
 */
export function makeDay2(dir: string, day1: Day1, changeRatio: number, writeSize: number, smallWrites: number, seed: number): Day2 {
  const path = join(dir, 'day2.img');
  const extentsFile = join(dir, 'day2.extents.json');
  denseCopy(day1.path, path);
  const bigWrites = Math.max(1, Math.round((day1.sizeBytes * changeRatio) / writeSize));
  const fresh = syntheticVmData(bigWrites * writeSize + smallWrites * PAGE, seed ^ 0x0e2e, WRITTEN_MIX);
  const rng = new Rng(seed);
  const pages = new Set<number>();
  const extents: Extent[] = [];
  const fd = openSync(path, 'r+');
  let src = 0;
  try {
    const write = (length: number): void => {
      const page = rng.int((day1.sizeBytes - length) / PAGE + 1);
      const offset = page * PAGE;
      for (let w = 0; w < length; ) w += writeSync(fd, fresh, src + w, length - w, offset + w);
      src += length;
      for (let p = 0; p < length / PAGE; p++) pages.add(page + p);
      extents.push({ offset, length });
    };
    for (let i = 0; i < bigWrites; i++) write(writeSize);
    for (let i = 0; i < smallWrites; i++) write(PAGE);
  } finally {
    closeSync(fd);
  }
  const list = sorted(extents);
  writeFileSync(extentsFile, JSON.stringify(list) + '\n');
  return { path, extentsFile, extents: list, bigWrites, smallWrites, changedBytes: pages.size * PAGE };
}
