/**
 * Extent lists: validation of user input, normalisation (sort + merge overlapping
 * and adjacent extents) and alignment to chunk slots.
 *
 * Terms: an extent is `[offset, offset + length)` in bytes; a slot range is
 * `[first, end)` in chunk slots.
 */
import type { Extent } from './source.js';
import { ChunkvaultError } from './errors.js';

export interface SlotRange {
  readonly first: number;
  /** Exclusive. */
  readonly end: number;
}

function bad(message: string, index?: number): ChunkvaultError {
  return new ChunkvaultError('EXTENTS_INVALID', index === undefined ? message : `extent ${index}: ${message}`, {
    details: index === undefined ? {} : { index },
  });
}

function checkInteger(value: unknown, field: string, index: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw bad(`${field} must be an integer`, index);
  if (value < 0) throw bad(`${field} must not be negative`, index);
  return value;
}

/**
 * Validates an untrusted extent list (parsed JSON) against a disk size. Zero-length
 * extents are dropped; overlapping and unsorted extents are accepted (normalised later).
 */
export function validateExtents(input: unknown, diskSize: number): Extent[] {
  if (!Array.isArray(input)) throw bad('the extent list must be a JSON array of {"offset": N, "length": N}');
  const out: Extent[] = [];
  input.forEach((item: unknown, i) => {
    if (typeof item !== 'object' || item === null || Array.isArray(item)) throw bad('must be an object', i);
    const { offset, length } = item as Record<string, unknown>;
    const o = checkInteger(offset, 'offset', i);
    const l = checkInteger(length, 'length', i);
    if (o + l > diskSize) throw bad(`[${o}, ${o + l}) ends beyond the disk end ${diskSize}`, i);
    if (l > 0) out.push({ offset: o, length: l });
  });
  return out;
}

/** Parses an extent-list file's text. */
export function parseExtentsJson(text: string, diskSize: number): Extent[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ChunkvaultError('EXTENTS_INVALID', `the extent list is not valid JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return validateExtents(parsed, diskSize);
}

/** Sorts and merges overlapping or touching extents; drops empty ones. */
export function normalizeExtents(extents: readonly Extent[]): Extent[] {
  const sorted = extents.filter((e) => e.length > 0).sort((a, b) => a.offset - b.offset);
  const out: { offset: number; length: number }[] = [];
  for (const e of sorted) {
    const last = out.at(-1);
    if (last && e.offset <= last.offset + last.length) {
      last.length = Math.max(last.length, e.offset + e.length - last.offset);
    } else {
      out.push({ offset: e.offset, length: e.length });
    }
  }
  return out;
}

/**
 * The slots that normalised extents touch, aligned outward to chunk boundaries and
 * merged; clipped to `slotCount`.
 */
export function extentsToSlots(extents: readonly Extent[], chunkSize: number, slotCount: number): SlotRange[] {
  const out: { first: number; end: number }[] = [];
  for (const e of normalizeExtents(extents)) {
    const first = Math.floor(e.offset / chunkSize);
    const end = Math.min(slotCount, Math.ceil((e.offset + e.length) / chunkSize));
    if (first >= end) continue;
    const last = out.at(-1);
    if (last && first <= last.end) last.end = Math.max(last.end, end);
    else out.push({ first, end });
  }
  return out;
}

/** Union of two sorted, merged slot range lists. */
export function unionSlots(a: readonly SlotRange[], b: readonly SlotRange[]): SlotRange[] {
  const all = [...a, ...b].sort((x, y) => x.first - y.first);
  const out: { first: number; end: number }[] = [];
  for (const r of all) {
    const last = out.at(-1);
    if (last && r.first <= last.end) last.end = Math.max(last.end, r.end);
    else out.push({ first: r.first, end: r.end });
  }
  return out;
}

export function slotCountOf(ranges: readonly SlotRange[]): number {
  return ranges.reduce((n, r) => n + r.end - r.first, 0);
}
