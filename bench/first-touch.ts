/**
 * What the first touch of fresh memory costs on this machine, against touching the same
 * bytes again: the page-fault and page-zeroing cost a backup pays once per process for
 * its window slabs and container stages (engine/_window-slab.ts, engine/container.ts).
 *
 *   node dist/bench/first-touch.js [--quick] [--json FILE]
 *
 * Each measurement runs in a fresh process: N MiB of shared memory, either a plain
 * SharedArrayBuffer (4 KiB pages) or engine/aligned-memory.ts's alignedShared (a shared
 * WebAssembly.Memory advised for huge pages, as the arena's blocks are), filled once
 * (first touch) and again (the bytes alone). Runs are repeated because the first-touch
 * cost depends on whether the host still backs the pages the guest hands out.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MIB } from './_data.js';
import { machineInfo, median, parseArgs, printMachine, printTable, writeJson } from './_report.js';

type Pages = '4k' | 'huge';
interface Touch {
  readonly pages: Pages;
  readonly mib: number;
  readonly firstMs: number;
  readonly againMs: number;
}

function fillMs(view: Uint8Array, value: number): number {
  const t = process.hrtime.bigint();
  view.fill(value);
  return Number(process.hrtime.bigint() - t) / 1e6;
}

/** The child: one memory, two fills, one JSON line. */
async function child(pages: Pages, mib: number): Promise<void> {
  const bytes = mib * MIB;
  const view = pages === 'huge' ? (await import('../engine/aligned-memory.js')).alignedShared(bytes) : new Uint8Array(new SharedArrayBuffer(bytes));
  const firstMs = fillMs(view, 1);
  const againMs = fillMs(view, 2);
  console.log(JSON.stringify({ pages, mib, firstMs, againMs } satisfies Touch));
}

function measure(pages: Pages, mib: number): Touch {
  const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--child', pages, String(mib)], { encoding: 'utf8' });
  return JSON.parse(out) as Touch;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') return child(argv[1] as Pages, Number(argv[2]));
  const args = parseArgs(argv);
  const machine = machineInfo();
  printMachine(machine);
  const sizes = args.quick ? [32] : [32, 64, 128];
  const runs = args.quick ? 3 : 5;
  const results: Touch[] = [];
  const rows: string[][] = [];
  for (const pages of ['4k', 'huge'] as const) {
    for (const mib of sizes) {
      const r = Array.from({ length: runs }, () => measure(pages, mib));
      results.push(...r);
      const first = r.map((t) => t.firstMs);
      const again = median(r.map((t) => t.againMs));
      rows.push([
        `${mib} MiB, ${pages === 'huge' ? 'MADV_HUGEPAGE' : '4 KiB pages'}`,
        `${median(first).toFixed(0)} ms [${Math.min(...first).toFixed(0)}-${Math.max(...first).toFixed(0)}]`,
        `${again.toFixed(0)} ms`,
        `${((median(first) - again) / mib).toFixed(2)} ms`,
      ]);
    }
  }
  printTable(['memory', `first fill (median of ${runs} processes)`, 'second fill', 'fault cost per MiB'], rows);
  if (args.json) writeJson(args.json, { machine, runs: results });
}

await main();
