/**
 * Human-readable sizes, rates and durations, and the size syntax the CLI accepts
 * (`64K`, `1M`, `1MiB`, `4096`; binary multiples: K = KiB).
 */
import { ChunkvaultError } from '../engine/index.js';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return '?';
  let v = Math.abs(n);
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  const text = u === 0 ? String(v) : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  return `${n < 0 ? '-' : ''}${text} ${UNITS[u]}`;
}

export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`;
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '--:--';
  const s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const mm = String(m).padStart(2, '0');
  const ss = String(sec).padStart(2, '0');
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

const MULT: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** Parses `64K`, `1M`, `1MiB`, `2G`, `65536`; rejects anything else. */
export function parseSize(text: string): number {
  const m = /^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(text);
  if (!m) throw new ChunkvaultError('INVALID_ARGUMENT', `invalid size "${text}": use e.g. 64K, 1M, 1MiB or a byte count`);
  return Number(m[1]) * (MULT[(m[2] ?? '').toUpperCase()] ?? 1);
}

export function formatRatio(r: number): string {
  return r === 0 ? '-' : `${r.toFixed(2)}x`;
}
