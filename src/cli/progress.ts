/**
 * A one-line progress bar with rate and ETA on stderr, drawn only when stderr is a
 * TTY (quiet in pipes, logs and CI). Redraws at most 10 times a second.
 */
import { formatBytes, formatDuration, formatRate } from '../units.js';

export interface Progress {
  update(done: number, total: number): void;
  finish(): void;
}

const NOOP: Progress = { update: () => undefined, finish: () => undefined };

export function createProgress(label: string, unit: 'bytes' | 'items' = 'bytes', stream = process.stderr): Progress {
  if (!stream.isTTY || process.env.CHUNKVAULT_NO_PROGRESS) return NOOP;
  const started = Date.now();
  let last = 0;
  let drawn = false;
  const fmt = (n: number) => (unit === 'bytes' ? formatBytes(n) : String(n));
  return {
    update(done, total) {
      const now = Date.now();
      if (now - last < 100 && done < total) return;
      last = now;
      const elapsed = Math.max(1, now - started);
      const rate = (done / elapsed) * 1000;
      const eta = rate > 0 ? ((total - done) / rate) * 1000 : NaN;
      const frac = total > 0 ? Math.min(1, done / total) : 1;
      const width = 24;
      const filled = Math.round(frac * width);
      const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
      const rateText = unit === 'bytes' ? formatRate(rate) : `${rate.toFixed(1)}/s`;
      const line = `${label} [${bar}] ${(frac * 100).toFixed(1)}% ${fmt(done)}/${fmt(total)} ${rateText} ETA ${formatDuration(eta)}`;
      stream.write(`\r\x1b[2K${line}`);
      drawn = true;
    },
    finish() {
      if (drawn) stream.write('\r\x1b[2K');
    },
  };
}
