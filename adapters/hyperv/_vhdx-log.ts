/**
 * VHDX log replay (MS-VHDX 2.3), in memory: this reader never writes to an image, so
 * the replayed writes become an overlay that every later read of the file goes through.
 *
 * Terms: the log is a circular buffer of entries, each a whole number of 4 KiB
 * sectors: a header sector ("loge", CRC-32C over the entry, sequence number, Tail =
 * offset of the oldest entry still needed), descriptor sectors (32-byte "zero" and
 * "desc" descriptors), then one data sector ("data") per data descriptor. A data
 * descriptor writes 4 KiB at FileOffset: its 8 LeadingBytes, the sector's 4084 data
 * bytes, its 4 TrailingBytes.
 *
 * The active sequence: among valid entries (signature, checksum, LogGuid of the header,
 * sequence numbers in descriptors and data sectors), the one with the highest sequence
 * number whose Tail leads, entry by consecutive entry, back to it. Its entries are
 * replayed from the tail to the head. No valid sequence means nothing to replay.
 */
import { crc32cWithZeroField } from './_crc32c.js';
import { guidToString } from './_vhdx-format.js';

const SECTOR = 4096;

/** One replayed write: `data` (4 KiB) or zeros when null. */
export interface LogWrite {
  readonly offset: number;
  readonly length: number;
  readonly data: Buffer | null;
}

export interface Replay {
  readonly writes: readonly LogWrite[];
  /** The file must be at least this long once the log is replayed. */
  readonly flushedFileOffset: number;
  readonly lastFileOffset: number;
  readonly entries: number;
}

interface Entry {
  readonly pos: number;
  readonly length: number;
  readonly tail: number;
  readonly seq: bigint;
  readonly flushedFileOffset: number;
  readonly lastFileOffset: number;
  readonly writes: LogWrite[];
}

function u64(buf: Buffer, at: number): number {
  return Number(buf.readBigUInt64LE(at));
}

/** Decodes descriptors and data sectors; null when any part is inconsistent. */
function decodeWrites(e: Buffer, count: number, seq: bigint): LogWrite[] | null {
  const descSectors = Math.ceil((64 + 32 * count) / SECTOR);
  let data = descSectors * SECTOR;
  const writes: LogWrite[] = [];
  for (let i = 0; i < count; i++) {
    const d = 64 + i * 32;
    const sig = e.toString('latin1', d, d + 4);
    if (e.readBigUInt64LE(d + 24) !== seq) return null;
    if (sig === 'zero') {
      writes.push({ offset: u64(e, d + 16), length: u64(e, d + 8), data: null });
    } else if (sig === 'desc') {
      if (data + SECTOR > e.length || e.toString('latin1', data, data + 4) !== 'data') return null;
      if (e.readUInt32LE(data + 4) !== Number(seq >> 32n) || e.readUInt32LE(data + 4092) !== Number(seq & 0xffffffffn)) return null;
      const block = Buffer.alloc(SECTOR);
      e.copy(block, 0, d + 8, d + 16); // LeadingBytes
      e.copy(block, 8, data + 8, data + 4092);
      e.copy(block, 4092, d + 4, d + 8); // TrailingBytes
      writes.push({ offset: u64(e, d + 16), length: SECTOR, data: block });
      data += SECTOR;
    } else {
      return null;
    }
  }
  return data === e.length ? writes : null;
}

/** Parses the entry at `pos` of the (doubled, to read across the wrap) log; null if invalid. */
function parseEntry(doubled: Buffer, logLength: number, pos: number, logGuid: string): Entry | null {
  if (doubled.toString('latin1', pos, pos + 4) !== 'loge') return null;
  const length = doubled.readUInt32LE(pos + 8);
  if (length < SECTOR || length % SECTOR !== 0 || length > logLength) return null;
  const e = doubled.subarray(pos, pos + length);
  if (crc32cWithZeroField(e, 4) !== e.readUInt32LE(4)) return null;
  if (guidToString(e, 32) !== logGuid) return null;
  const tail = e.readUInt32LE(12);
  const seq = e.readBigUInt64LE(16);
  if (tail % SECTOR !== 0 || tail >= logLength || seq === 0n) return null;
  const writes = decodeWrites(e, e.readUInt32LE(24), seq);
  if (writes === null) return null;
  return { pos, length, tail, seq, flushedFileOffset: u64(e, 48), lastFileOffset: u64(e, 56), writes };
}

/** Walks from the head's tail to the head through consecutive entries; null if broken. */
function sequenceOf(head: Entry, entries: ReadonlyMap<number, Entry>, logLength: number): Entry[] | null {
  const out: Entry[] = [];
  let at = entries.get(head.tail);
  while (at !== undefined && out.length <= entries.size) {
    out.push(at);
    if (at === head) return out;
    const next = entries.get((at.pos + at.length) % logLength);
    if (next === undefined || next.seq !== at.seq + 1n) return null;
    at = next;
  }
  return null;
}

/** Finds and decodes the active sequence of `log` (the whole log region). */
export function replayLog(log: Buffer, logGuid: string): Replay {
  const doubled = Buffer.concat([log, log]);
  const entries = new Map<number, Entry>();
  for (let pos = 0; pos < log.length; pos += SECTOR) {
    const e = parseEntry(doubled, log.length, pos, logGuid);
    if (e !== null) entries.set(pos, e);
  }
  let best: Entry[] | null = null;
  for (const head of entries.values()) {
    if (best !== null && (best[best.length - 1] as Entry).seq >= head.seq) continue;
    best = sequenceOf(head, entries, log.length) ?? best;
  }
  if (best === null) return { writes: [], flushedFileOffset: 0, lastFileOffset: 0, entries: 0 };
  const head = best[best.length - 1] as Entry;
  return { writes: best.flatMap((e) => e.writes), flushedFileOffset: head.flushedFileOffset, lastFileOffset: head.lastFileOffset, entries: best.length };
}

/** Applies `writes` (in order) to `target`, which holds file bytes from `pos`. */
export function applyWrites(writes: readonly LogWrite[], target: Uint8Array, pos: number): void {
  const end = pos + target.length;
  for (const w of writes) {
    const from = Math.max(pos, w.offset);
    const to = Math.min(end, w.offset + w.length);
    if (from >= to) continue;
    if (w.data === null) target.fill(0, from - pos, to - pos);
    else target.set(w.data.subarray(from - w.offset, to - w.offset), from - pos);
  }
}
