/**
 * Optional profile of chunkvault (default settings, a fresh repository): a full
 * backup of day 1, the incremental of day 2 with its extent list, and a restore of
 * day 1, each under `node --cpu-prof`, which writes one .cpuprofile per thread (the
 * main thread and each worker of the pool). This module sums self time per function.
 *
 * Self time of a sample is the gap to the next sample (the V8 sampler's interval),
 * attributed to the frame on top of the stack. Waiting is left out of the shares:
 * "(idle)" (an event loop with nothing to do) and piscina's `atomicsWaitLoop` (a
 * worker blocked in Atomics.wait for its next task, which V8 samples as a JS frame).
 * The sampler ticks on wall-clock time, so a thread that is runnable but has no core
 * (three threads, two cores, other load) still counts as busy: compare "busy" with
 * the CPU seconds that GNU time reports for the same run.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { timed } from './_e2e-exec.js';
import type { Ctx } from './_e2e-tools.js';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface CpuProfile {
  nodes: { id: number; callFrame: CallFrame }[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface FrameTime {
  readonly frame: string;
  readonly selfMs: number;
  /** Share of the busy (non-idle) time of the threads summed. */
  readonly share: number;
}

export interface ThreadProfile {
  readonly file: string;
  readonly wallMs: number;
  readonly busyMs: number;
  readonly top: readonly FrameTime[];
}

export interface ProfileSummary {
  readonly threads: readonly ThreadProfile[];
  /** All threads together. */
  readonly top: readonly FrameTime[];
  readonly busyMs: number;
}

const WAIT = '(idle)';
/** Frames that are a thread waiting for work, not working. */
const WAIT_FUNCTIONS = new Set(['atomicsWaitLoop']);

/** Where a frame lives: package-relative under node_modules, folder/file for our code, node:... for Node's own. */
function location(url: string): string {
  if (!url) return 'native';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) return url.slice(nm + 'node_modules/'.length);
  if (url.startsWith('file://')) return url.split('/').slice(-2).join('/');
  return url.startsWith('node:') || url.startsWith('wasm:') ? url : basename(url);
}

function frameName(cf: CallFrame): string {
  if (cf.functionName.startsWith('(')) return cf.functionName; // (garbage collector), (program), (idle)
  if (WAIT_FUNCTIONS.has(cf.functionName)) return WAIT;
  return `${cf.functionName || '(anonymous)'} ${location(cf.url)}:${cf.lineNumber + 1}`;
}

/** Self milliseconds per frame name in one profile. */
function selfTimes(p: CpuProfile): Map<string, number> {
  const names = new Map<number, string>();
  for (const n of p.nodes) names.set(n.id, frameName(n.callFrame));
  const out = new Map<string, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const us = p.timeDeltas[i + 1] ?? 0;
    const name = names.get(p.samples[i] ?? -1) ?? '(unknown)';
    out.set(name, (out.get(name) ?? 0) + us / 1000);
  }
  return out;
}

function topOf(times: Map<string, number>, n: number): { top: FrameTime[]; busyMs: number } {
  let busyMs = 0;
  for (const [k, v] of times) if (k !== WAIT) busyMs += v;
  const top = [...times]
    .filter(([k]) => k !== WAIT)
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([frame, selfMs]) => ({ frame, selfMs, share: busyMs > 0 ? selfMs / busyMs : 0 }));
  return { top, busyMs };
}

/** Reads every .cpuprofile in `dir` and returns the top `n` frames per thread and overall. */
export function summarizeProfiles(dir: string, n = 15): ProfileSummary {
  const all = new Map<string, number>();
  const threads: ThreadProfile[] = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).sort()) {
    const p = JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile;
    const times = selfTimes(p);
    for (const [k, v] of times) all.set(k, (all.get(k) ?? 0) + v);
    const { top, busyMs } = topOf(times, n);
    threads.push({ file, wallMs: (p.endTime - p.startTime) / 1000, busyMs, top });
  }
  const { top, busyMs } = topOf(all, n);
  return { threads, top, busyMs };
}

export interface ProfiledStep {
  readonly step: 'full' | 'incremental' | 'restore-day1';
  readonly wallSec: number;
  readonly cpuSec: number;
  readonly summary: ProfileSummary;
}

/** Runs the three profiled chunkvault commands in `<tmp>/profile` and summarises each. */
export function profileChunkvault(ctx: Ctx): ProfiledStep[] {
  const dir = join(ctx.tmp, 'profile');
  const repo = join(dir, 'repo');
  const timeFile = join(dir, 'time.txt');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const env = { ...process.env, CHUNKVAULT_NO_PROGRESS: '1' };
  const where = ['--repo', repo, '--vm', 'vm1', '--disk', 'disk0'];
  timed(process.execPath, [ctx.cli, 'init', repo], timeFile, { env });
  const steps: [ProfiledStep['step'], string[]][] = [
    ['full', ['backup', ctx.day1.path, ...where, '--json']],
    ['incremental', ['backup', ctx.day2.path, ...where, '--changed-extents', ctx.day2.extentsFile, '--json']],
    ['restore-day1', ['restore', '', ...where, '--output', join(dir, 'restored.img')]],
  ];
  const out: ProfiledStep[] = [];
  let firstPoint = '';
  for (const [step, args] of steps) {
    const profDir = join(dir, `cpuprofiles-${step}`);
    mkdirSync(profDir, { recursive: true });
    if (step === 'restore-day1') args[1] = firstPoint;
    const t = timed(process.execPath, ['--cpu-prof', '--cpu-prof-dir', profDir, ctx.cli, ...args], timeFile, { env });
    if (step === 'full') firstPoint = (JSON.parse(t.stdout) as { point: string }).point;
    ctx.log(`profiled ${step}: ${t.wallSec.toFixed(2)} s wall, CPU ${(t.userSec + t.sysSec).toFixed(2)} s, profiles in ${profDir}`);
    out.push({ step, wallSec: t.wallSec, cpuSec: t.userSec + t.sysSec, summary: summarizeProfiles(profDir) });
  }
  rmSync(repo, { recursive: true, force: true });
  rmSync(join(dir, 'restored.img'), { force: true });
  return out;
}

function printProfile(p: ProfiledStep): void {
  const s = p.summary;
  console.log(
    `\nprofile of ${p.step} (wall ${p.wallSec.toFixed(2)} s, CPU ${p.cpuSec.toFixed(2)} s): ` +
      `${s.threads.length} threads, ${(s.busyMs / 1000).toFixed(2)} s busy in total (waiting excluded)`,
  );
  for (const t of s.top) console.log(`  ${(t.share * 100).toFixed(1).padStart(5)} %  ${(t.selfMs / 1000).toFixed(2).padStart(6)} s  ${t.frame}`);
  for (const th of s.threads) {
    const five = th.top
      .slice(0, 5)
      .map((t) => `${t.frame} ${(t.share * 100).toFixed(0)}%`)
      .join('; ');
    console.log(`  thread ${th.file}: wall ${(th.wallMs / 1000).toFixed(2)} s, busy ${(th.busyMs / 1000).toFixed(2)} s: ${five}`);
  }
}

/** Prints each profiled step: the overall top frames, then each thread's busy time and top 5. */
export function printProfiles(list: readonly ProfiledStep[]): void {
  for (const p of list) printProfile(p);
}
