/** Shared helpers for the bench scripts: arguments, machine facts, tables, JSON. */
import { readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';

export interface BenchArgs {
  readonly quick: boolean;
  readonly json: string | undefined;
}

/** `--quick` and `--json FILE`; anything else is refused so typos are not silent. */
export function parseArgs(argv: readonly string[]): BenchArgs {
  let quick = false;
  let json: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') quick = true;
    else if (a === '--json') {
      json = argv[++i];
      if (!json) throw new Error('--json needs a file name');
    } else throw new Error(`unknown argument ${a}; use [--quick] [--json FILE]`);
  }
  return { quick, json };
}

export interface MachineInfo {
  readonly date: string;
  readonly node: string;
  readonly cpus: number;
  readonly cpuModel: string;
  readonly shaNi: boolean;
  /** 1-minute load average at start: other work on the machine skews results. */
  readonly load1: number;
}

export function machineInfo(): MachineInfo {
  let cpuModel = 'unknown';
  let shaNi = false;
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    cpuModel = /^model name\s*:\s*(.*)$/m.exec(info)?.[1] ?? cpuModel;
    shaNi = /^flags\s*:.*\bsha_ni\b/m.test(info);
  } catch {
    // not Linux: keep defaults
  }
  const load1 = Number((loadavg()[0] ?? 0).toFixed(2));
  return { date: new Date().toISOString(), node: process.version, cpus: availableParallelism(), cpuModel, shaNi, load1 };
}

/**
 * System-wide busy and total CPU seconds (/proc/stat, USER_HZ = 100), and this
 * process's CPU seconds including its finished children (mke2fs).
 */
function cpuSample(): { busy: number; total: number; own: number } {
  try {
    const self = readFileSync('/proc/self/stat', 'utf8');
    const f = self.slice(self.lastIndexOf(')') + 2).split(' ').map(Number);
    // fields 14-17 of stat(5) (utime, stime, cutime, cstime) are 11-14 after the name
    const own = ((f[11] ?? 0) + (f[12] ?? 0) + (f[13] ?? 0) + (f[14] ?? 0)) / 100;
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: (total - idle) / 100, total: total / 100, own };
  } catch {
    return { busy: 0, total: 0, own: 0 }; // not Linux
  }
}

/**
 * Starts watching the machine; the returned function gives the average number of
 * cores other processes kept busy since then. The machine is shared: a run with
 * others busy is slower, and the report says so rather than hiding it.
 */
export function watchOtherLoad(): () => number {
  const start = cpuSample();
  return () => {
    const end = cpuSample();
    const wall = (end.total - start.total) / availableParallelism();
    if (wall <= 0) return 0;
    return Math.max(0, (end.busy - start.busy - (end.own - start.own)) / wall);
  };
}

export function printMachine(m: MachineInfo): void {
  console.log(`# ${m.date}  node ${m.node}  nproc ${m.cpus}  cpu "${m.cpuModel}"  sha_ni ${m.shaNi}  load ${m.load1}`);
}

/** Decimal units, as the physical-limits table uses (1 GB/s = 1e9 B/s). */
export function gbps(bytesPerSecond: number): string {
  return `${(bytesPerSecond / 1e9).toFixed(2)} GB/s`;
}

export function opsps(opsPerSecond: number): string {
  if (opsPerSecond >= 1e6) return `${(opsPerSecond / 1e6).toFixed(2)} M ops/s`;
  return `${(opsPerSecond / 1e3).toFixed(1)} k ops/s`;
}

export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${units[u]}`;
}

/** The middle value (the upper middle of an even count); NaN for none. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  return [...values].sort((a, b) => a - b)[values.length >> 1] as number;
}

/** Prints rows as an aligned plain-text table (first column left, others right). */
export function printTable(header: readonly string[], rows: readonly (readonly string[])[]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) console.log(line(r));
}

export function writeJson(file: string, value: unknown): void {
  writeFileSync(file, JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2) + '\n');
  console.log(`wrote ${file}`);
}
