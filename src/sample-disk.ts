/**
 * Generated sample disks for the demo, tests and benchmarks: a seeded mix of what
 * VM disks hold (zero regions, text, incompressible data, sparse binary pages and
 * duplicated regions), and seeded random writes that return their extents (what
 * changed-block tracking would report).
 */
import { createCipheriv, createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import type { Extent } from '../engine/index.js';

const REGION = 1024 * 1024;

/** Deterministic pseudo-random bytes (AES-128-CTR keystream of a seed). */
export class SeededBytes {
  private readonly cipher;
  private state: number;

  constructor(seed: string) {
    const key = createHash('sha256').update(seed).digest();
    this.cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
    this.state = key.readUInt32LE(0) || 1;
  }

  bytes(n: number): Buffer {
    return this.cipher.update(Buffer.alloc(n));
  }

  /** A uniform integer in [0, n). */
  int(n: number): number {
    this.state ^= this.state << 13;
    this.state ^= this.state >>> 17;
    this.state ^= this.state << 5;
    return (this.state >>> 0) % n;
  }
}

const WORDS = 'the of and to in is for on with as by at from kernel module disk block sector inode journal ext4 system user config log error warning info debug service network packet buffer cache page memory'.split(' ');

function textRegion(rng: SeededBytes, n: number): Buffer {
  const parts: string[] = [];
  let len = 0;
  while (len < n) {
    const line = `${Date.UTC(2026, 0, 1, 0, 0, rng.int(1e6))} ${Array.from({ length: 6 + rng.int(10) }, () => WORDS[rng.int(WORDS.length)]).join(' ')}\n`;
    parts.push(line);
    len += line.length;
  }
  return Buffer.from(parts.join('')).subarray(0, n);
}

function binaryRegion(rng: SeededBytes, n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let at = 0; at < n; at += 4096) {
    const used = rng.int(4096);
    rng.bytes(used).copy(out, at, 0, Math.min(used, n - at));
  }
  return out;
}

export interface SampleDiskOptions {
  readonly sizeBytes: number;
  readonly seed?: string;
}

/** Writes a sample disk image of exactly `sizeBytes` bytes to `path`. */
export async function writeSampleDisk(path: string, options: SampleDiskOptions): Promise<void> {
  const rng = new SeededBytes(options.seed ?? 'chunkvault-sample');
  const fh = await fsp.open(path, 'w');
  const earlier: Buffer[] = [];
  try {
    await fh.truncate(options.sizeBytes);
    for (let at = 0; at < options.sizeBytes; at += REGION) {
      const n = Math.min(REGION, options.sizeBytes - at);
      const kind = rng.int(100);
      let region: Buffer | undefined;
      if (kind < 30) region = undefined;
      else if (kind < 55) region = textRegion(rng, n);
      else if (kind < 75) region = rng.bytes(n);
      else if (kind < 90) region = binaryRegion(rng, n);
      else region = earlier.length ? earlier[rng.int(earlier.length)]!.subarray(0, n) : rng.bytes(n);
      if (region) {
        await fh.write(region, 0, region.length, at);
        if (earlier.length < 16 && region.length === REGION) earlier.push(region);
      }
    }
  } finally {
    await fh.close();
  }
}

export interface MutateOptions {
  readonly seed: string;
  /** Number of writes. */
  readonly writes: number;
  /** Largest write in bytes. */
  readonly maxLength: number;
}

/** Applies seeded random writes (data or zeros) to an image; returns their extents. */
export async function mutateDisk(path: string, options: MutateOptions): Promise<Extent[]> {
  const rng = new SeededBytes(options.seed);
  const fh = await fsp.open(path, 'r+');
  const extents: Extent[] = [];
  try {
    const { size } = await fh.stat();
    for (let i = 0; i < options.writes; i++) {
      const length = Math.min(size, 1 + rng.int(options.maxLength));
      const offset = rng.int(size - length + 1);
      const data = rng.int(10) === 0 ? Buffer.alloc(length) : rng.int(2) ? textRegion(rng, length) : rng.bytes(length);
      await fh.write(data, 0, length, offset);
      extents.push({ offset, length });
    }
  } finally {
    await fh.close();
  }
  return extents;
}

/** SHA-256 hex of a whole file, streamed. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  const fh = await fsp.open(path, 'r');
  try {
    const buf = Buffer.alloc(4 * 1024 * 1024);
    for (let pos = 0; ; ) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}
