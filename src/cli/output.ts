/**
 * Output helpers: aligned text tables for people, JSON for tools, and the error
 * report (one line `chunkvault: CODE: message` on stderr, or a JSON object on stdout
 * with --json).
 */
import { ChunkvaultError, toChunkvaultError } from '../../engine/index.js';

export function table(headers: string[], rows: string[][], rightAlign: number[] = []): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (rightAlign.includes(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString(16) : v), 2) + '\n');
}

/** Reports an error and returns the exit status for it. */
export function reportError(err: unknown, json: boolean): number {
  const e = err instanceof ChunkvaultError ? err : toChunkvaultError(err, 'unexpected failure');
  if (json) printJson({ error: e.toJSON() });
  process.stderr.write(`chunkvault: ${e.code}: ${e.message}\n`);
  if (process.env.CHUNKVAULT_DEBUG && err instanceof Error) process.stderr.write(`${err.stack ?? ''}\n`);
  return e.exitCode;
}
