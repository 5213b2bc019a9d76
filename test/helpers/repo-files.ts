/**
 * Reads repository files straight from their byte layout in engine/FORMAT.md, without
 * the engine's decoders, so tests can find and damage a given record or map slot and
 * work out independently which points reference which chunk.
 *
 * Terms as in FORMAT.md: a container holds records and ends with a footer (64 bytes
 * per record) and a 32-byte trailer; a point map is a 64-byte header, one 32-byte
 * digest per slot, and a 32-byte trailer.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';

const CONTAINER_HEADER = 32;
const RECORD_HEADER = 64;
const FOOTER_ENTRY = 64;
const TRAILER = 32;
const MAP_HEADER = 64;
const DIGEST = 32;
const ZERO_DIGEST = '0'.repeat(64);

export interface ContainerFile {
  readonly id: string;
  readonly path: string;
  readonly size: number;
}

export interface FooterRecord {
  /** SHA-256 hex of the chunk's raw bytes. */
  readonly digest: string;
  /** Start of the record header in the file. */
  readonly offset: number;
  readonly rawLength: number;
  readonly storedLength: number;
  readonly codec: number;
}

/** Every sealed container `containers/<xx>/<id>.ctr` of a repository. */
export async function listContainers(repo: string): Promise<ContainerFile[]> {
  const root = join(repo, 'containers');
  const out: ContainerFile[] = [];
  for (const shard of await fsp.readdir(root)) {
    if (!/^[0-9a-f]{2}$/.test(shard)) continue;
    for (const name of await fsp.readdir(join(root, shard))) {
      const m = /^([0-9a-f]{32})\.ctr$/.exec(name);
      if (!m) continue;
      const path = join(root, shard, name);
      out.push({ id: m[1]!, path, size: (await fsp.stat(path)).size });
    }
  }
  return out.sort((a, b) => (a.id < b.id ? -1 : 1));
}

/** The footer of a sealed container (magic, trailer and size checked). */
export async function readFooter(path: string): Promise<FooterRecord[]> {
  const buf = await fsp.readFile(path);
  if (buf.subarray(0, 8).toString('latin1') !== 'CVCTR\0\0\x01') throw new Error(`${path}: bad container magic`);
  const trailer = buf.subarray(buf.length - TRAILER);
  if (trailer.subarray(0, 8).toString('latin1') !== 'CVFTR\0\0\x01') throw new Error(`${path}: bad trailer magic`);
  const footerOffset = Number(trailer.readBigUInt64LE(8));
  const count = trailer.readUInt32LE(16);
  if (footerOffset + count * FOOTER_ENTRY + TRAILER !== buf.length) throw new Error(`${path}: footer size mismatch`);
  const records: FooterRecord[] = [];
  for (let i = 0; i < count; i++) {
    const e = buf.subarray(footerOffset + i * FOOTER_ENTRY, footerOffset + (i + 1) * FOOTER_ENTRY);
    records.push({
      digest: e.subarray(0, 32).toString('hex'),
      offset: Number(e.readBigUInt64LE(32)),
      rawLength: e.readUInt32LE(40),
      storedLength: e.readUInt32LE(44),
      codec: e.readUInt8(56),
    });
  }
  if (records.length > 0 && records[0]!.offset !== CONTAINER_HEADER) throw new Error(`${path}: first record not at ${CONTAINER_HEADER}`);
  return records;
}

/** File offset of the middle of a record's payload. */
export function payloadMiddle(r: FooterRecord): number {
  return r.offset + RECORD_HEADER + Math.floor(r.storedLength / 2);
}

/** XORs `mask` into `count` consecutive bytes of a file at `offset`. */
export async function flipBytes(path: string, offset: number, count = 1, mask = 0xff): Promise<void> {
  const fh = await fsp.open(path, 'r+');
  try {
    const b = Buffer.alloc(count);
    await fh.read(b, 0, count, offset);
    for (let i = 0; i < count; i++) b[i] = b[i]! ^ mask;
    await fh.write(b, 0, count, offset);
  } finally {
    await fh.close();
  }
}

/** `maps/<xx>/<pointId>.map` */
export function mapFile(repo: string, pointId: string): string {
  return join(repo, 'maps', pointId.slice(0, 2), `${pointId}.map`);
}

export interface MapContents {
  readonly chunkSize: number;
  readonly diskSize: number;
  readonly slotCount: number;
  /** One hex digest per slot; the zero sentinel for all-zero slots. */
  readonly digests: string[];
}

/** Reads a point map per FORMAT.md "Point map". */
export async function readMap(path: string): Promise<MapContents> {
  const buf = await fsp.readFile(path);
  if (buf.subarray(0, 8).toString('latin1') !== 'CVMAP\0\0\x01') throw new Error(`${path}: bad map magic`);
  const chunkSize = buf.readUInt32LE(12);
  const diskSize = Number(buf.readBigUInt64LE(16));
  const slotCount = Number(buf.readBigUInt64LE(24));
  const digests: string[] = [];
  for (let i = 0; i < slotCount; i++) digests.push(buf.subarray(MAP_HEADER + i * DIGEST, MAP_HEADER + (i + 1) * DIGEST).toString('hex'));
  return { chunkSize, diskSize, slotCount, digests };
}

/** The distinct non-zero chunk digests a point references. */
export async function pointChunks(repo: string, pointId: string): Promise<Set<string>> {
  const { digests } = await readMap(mapFile(repo, pointId));
  return new Set(digests.filter((d) => d !== ZERO_DIGEST));
}

/** Map file offset of slot `i`'s digest. */
export function mapSlotOffset(i: number): number {
  return MAP_HEADER + i * DIGEST;
}
