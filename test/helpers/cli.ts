/**
 * Helpers for integration tests that drive the built `chunkvault` CLI as a user
 * would: a child process per command, temporary directories, generated sample disk
 * images, and `checkRepo` (the full repository check every integration test ends
 * with, like restic's TestCheckRepo).
 *
 * The CLI must be built first (`npm run build`); tests never build it themselves,
 * because other work may be in progress in the tree.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { ERROR_CODES, type ErrorCode } from '../../engine/errors.js';
import { mutateDisk, sha256File, writeSampleDisk, type MutateOptions } from '../../src/sample-disk.js';

export { mutateDisk, sha256File, writeSampleDisk };

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');

export const KiB = 1024;
export const MiB = 1024 * KiB;

/** Fails fast, with the command to run, when the CLI has not been built. */
export function ensureBuilt(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" before the integration tests`);
}

export interface CliResult {
  /** Exit status, or null when the process was ended by a signal. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  /** stdout as raw bytes (restore to `-`). */
  readonly stdoutBytes: Buffer;
  readonly stderr: string;
  /** Parsed stdout when `--json` was passed and stdout is JSON. */
  readonly json?: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  readonly durationMs: number;
}

export interface CliOptions {
  readonly cwd?: string;
  readonly env?: Record<string, string | undefined>;
  /** The process is killed (SIGKILL) after this long; default 120 s. */
  readonly timeoutMs?: number;
}

/** The environment every CLI run gets: no progress bar, no repository from the caller's shell. */
function cliEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, CHUNKVAULT_NO_PROGRESS: '1' };
  delete env.CHUNKVAULT_REPO;
  delete env.CHUNKVAULT_DEBUG;
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

export interface RunningCli {
  readonly child: ChildProcess;
  readonly started: number;
  readonly result: Promise<CliResult>;
}

/** Starts the CLI without waiting (for signal tests); `result` settles when it exits. */
export function startCli(args: readonly string[], options: CliOptions = {}): RunningCli {
  const started = Date.now();
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: options.cwd ?? ROOT,
    env: cliEnv(options.env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout!.on('data', (b: Buffer) => out.push(b));
  child.stderr!.on('data', (b: Buffer) => err.push(b));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
  const result = new Promise<CliResult>((resolvePromise, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const stdoutBytes = Buffer.concat(out);
      const stdout = stdoutBytes.toString('utf8');
      let json: unknown;
      if (args.includes('--json') && /^\s*[[{]/.test(stdout)) {
        try {
          json = JSON.parse(stdout);
        } catch {
          json = undefined;
        }
      }
      resolvePromise({
        code,
        signal,
        stdout,
        stdoutBytes,
        stderr: Buffer.concat(err).toString('utf8'),
        ...(json === undefined ? {} : { json }),
        durationMs: Date.now() - started,
      });
    });
  });
  return { child, started, result };
}

/** Runs `node dist/src/cli/main.js ...args` to completion. */
export function cli(args: readonly string[], options: CliOptions = {}): Promise<CliResult> {
  return startCli(args, options).result;
}

/** A one-line description of a result for assertion messages. */
export function describeResult(args: readonly string[], r: CliResult): string {
  return `chunkvault ${args.join(' ')} -> code ${r.code} signal ${r.signal}\nstderr: ${r.stderr.slice(0, 2000)}\nstdout: ${r.stdout.slice(0, 2000)}`;
}

/** Runs the CLI and asserts exit status 0; returns the result. */
export async function cliOk(args: readonly string[], options: CliOptions = {}): Promise<CliResult> {
  const r = await cli(args, options);
  expect(r.code, describeResult(args, r)).toBe(0);
  return r;
}

/**
 * Asserts a documented failure: the exit status ERROR_CODES maps `code` to, the
 * one-line `chunkvault: CODE: message` on stderr and, with --json, `{error: {code}}`
 * on stdout.
 */
export function expectCliError(r: CliResult, code: ErrorCode, args: readonly string[] = []): void {
  const what = describeResult(args, r);
  expect(r.code, what).toBe(ERROR_CODES[code]);
  expect(r.stderr, what).toMatch(new RegExp(`^chunkvault: ${code}: \\S`, 'm'));
  if (args.includes('--json')) {
    expect(r.json, `${what}\n(expected a JSON error object on stdout)`).toBeDefined();
    expect(r.json.error?.code, what).toBe(code);
    expect(typeof r.json.error?.message, what).toBe('string');
  }
}

/** Runs the CLI, expecting the failure `code` (see expectCliError). */
export async function cliFails(args: readonly string[], code: ErrorCode, options: CliOptions = {}): Promise<CliResult> {
  const r = await cli(args, options);
  expectCliError(r, code, args);
  return r;
}

/** A fresh directory under the OS temp dir; remove it with `removeTempDir`. */
export async function makeTempDir(label: string): Promise<string> {
  return fsp.mkdtemp(join(tmpdir(), `chunkvault-${label}-`));
}

export async function removeTempDir(dir: string | undefined): Promise<void> {
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
}

/** Writes a seeded sample disk image (zero, text, random, sparse-binary and repeated regions). */
export async function makeImage(path: string, sizeBytes: number, seed: string): Promise<string> {
  await writeSampleDisk(path, { sizeBytes, seed });
  return sha256File(path);
}

/** Writes an image of incompressible seeded bytes only (every chunk new, none zero). */
export async function makeRandomImage(path: string, sizeBytes: number, seed: string): Promise<string> {
  const fh = await fsp.open(path, 'w');
  try {
    let counter = 0;
    for (let at = 0; at < sizeBytes; at += MiB) {
      const n = Math.min(MiB, sizeBytes - at);
      await fh.write(seededBytes(`${seed}/${counter++}`, n), 0, n, at);
    }
  } finally {
    await fh.close();
  }
  return sha256File(path);
}

/** `n` deterministic pseudo-random bytes (SHA-256 in counter mode). */
export function seededBytes(seed: string, n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let at = 0, i = 0; at < n; at += 32, i++) {
    createHash('sha256').update(`${seed}:${i}`).digest().copy(out, at, 0, Math.min(32, n - at));
  }
  return out;
}

/** Applies seeded random writes to an image; returns their extents and the new SHA-256. */
export async function mutateImage(path: string, options: MutateOptions): Promise<{ extents: { offset: number; length: number }[]; sha: string }> {
  const extents = await mutateDisk(path, options);
  return { extents, sha: await sha256File(path) };
}

export async function writeJson(path: string, value: unknown): Promise<string> {
  await fsp.writeFile(path, JSON.stringify(value));
  return path;
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Creates a repository with `init` (extra flags as given). */
export async function initRepo(repo: string, flags: readonly string[] = []): Promise<CliResult> {
  return cliOk(['init', repo, ...flags, '--json']);
}

export interface BackupJson {
  readonly point: string;
  readonly vm: string;
  readonly disk: string;
  readonly parent: string | null;
  readonly mode: 'full' | 'incremental';
  readonly sizeBytes: number;
  readonly bytesRead: number;
  readonly bytesNew: number;
  readonly rawNew: number;
  readonly chunksRead: number;
  readonly chunksZero: number;
  readonly chunksNew: number;
  readonly chunksDedup: number;
  readonly durationMs: number;
}

/** Runs `backup ... --json` and asserts success; returns the parsed report. */
export async function backupOk(repo: string, source: string, vm: string, flags: readonly string[] = []): Promise<BackupJson> {
  const r = await cliOk(['backup', source, '--repo', repo, '--vm', vm, ...flags, '--json']);
  expect(r.json?.point, r.stdout).toMatch(/^[0-9a-f]{16}$/);
  return r.json as BackupJson;
}

export interface PointJson {
  readonly id: string;
  readonly vm: string;
  readonly disk: string;
  readonly time: string;
  readonly parent: string | null;
  readonly mode: string;
  readonly sizeBytes: number;
  readonly [k: string]: unknown;
}

/** `points --json` (filters as flags). */
export async function listPoints(repo: string, flags: readonly string[] = []): Promise<PointJson[]> {
  const r = await cliOk(['points', '--repo', repo, ...flags, '--json']);
  expect(Array.isArray(r.json), r.stdout).toBe(true);
  return r.json as PointJson[];
}

/**
 * Restores `ref` to a new file in `dir` and returns the file's SHA-256 (the file is
 * removed again). Asserts that no `.partial` file is left behind.
 */
export async function restoreSha(repo: string, ref: string, dir: string, flags: readonly string[] = []): Promise<string> {
  const out = join(dir, `restore-${ref}-${Date.now()}-${Math.random().toString(16).slice(2)}.img`);
  await cliOk(['restore', ref, '--repo', repo, '--output', out, ...flags]);
  expect(existsSync(`${out}.partial`)).toBe(false);
  const sha = await sha256File(out);
  await fsp.rm(out, { force: true });
  return sha;
}

/** Asserts that every point in `expected` (id -> SHA-256) restores byte-identically. */
export async function expectRestores(repo: string, expected: ReadonlyMap<string, string>, dir: string): Promise<void> {
  for (const [id, sha] of expected) {
    expect(await restoreSha(repo, id, dir), `restore of point ${id}`).toBe(sha);
  }
}

export interface VerifyJson {
  readonly ok: boolean;
  readonly pointsChecked: number;
  readonly chunksReferenced: number;
  readonly containersChecked: number;
  readonly chunksRead: number;
  readonly problems: { code: string; message: string; chunk?: string; container?: string; points: string[] }[];
}

/** `verify --read-data --json`, whatever its outcome. */
export async function verifyRepo(repo: string): Promise<{ result: CliResult; report: VerifyJson }> {
  const result = await cli(['verify', '--repo', repo, '--read-data', '--json']);
  expect(result.json, describeResult(['verify', '--read-data', '--json'], result)).toBeDefined();
  return { result, report: result.json as VerifyJson };
}

/**
 * The full repository check every integration test ends with: `verify --read-data
 * --json` exits 0 and reports no problem. Returns the report.
 */
export async function checkRepo(repo: string): Promise<VerifyJson> {
  const { result, report } = await verifyRepo(repo);
  const what = describeResult(['verify', '--repo', repo, '--read-data', '--json'], result);
  expect(report.problems, what).toEqual([]);
  expect(report.ok, what).toBe(true);
  expect(result.code, what).toBe(0);
  expect(report.chunksRead, what).toBeGreaterThanOrEqual(report.chunksReferenced);
  return report;
}

/** Every file under `dir` (relative paths, sorted), with sizes; empty when `dir` is absent. */
export async function listFiles(dir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const walk = async (d: string): Promise<void> => {
    const entries = await fsp.readdir(d, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.set(relative(dir, p), (await fsp.stat(p)).size);
    }
  };
  await walk(dir);
  return new Map([...out].sort(([a], [b]) => (a < b ? -1 : 1)));
}

/**
 * What a failed command must not change: committed points, maps, containers (sealed
 * and temporary), temporary files and config. The LMDB index and the session
 * registry are left out (opening a repository may touch them).
 */
export async function repoSnapshot(repo: string): Promise<Record<string, number>> {
  const files = await listFiles(repo);
  return Object.fromEntries([...files].filter(([p]) => !p.startsWith('index') && !p.startsWith('locks/')));
}

/** Files left in `containers/tmp/` and `tmp/` (both must be empty when no job runs). */
export async function leftoverTemporaries(repo: string): Promise<string[]> {
  const a = [...(await listFiles(join(repo, 'containers', 'tmp'))).keys()].map((n) => `containers/tmp/${n}`);
  const b = [...(await listFiles(join(repo, 'tmp'))).keys()].map((n) => `tmp/${n}`);
  return [...a, ...b];
}

/** A small seeded PRNG (xorshift32) for reproducible test schedules. */
export function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

/** Resolves once `predicate` is true, polling every `everyMs`; rejects after `timeoutMs`. */
export async function waitFor(predicate: () => Promise<boolean> | boolean, timeoutMs = 30_000, everyMs = 1): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Copies a whole repository (or any directory) to a new place. */
export async function copyDir(from: string, to: string): Promise<string> {
  await fsp.cp(from, to, { recursive: true });
  return to;
}

/**
 * Writes a text-like image of `sizeBytes` (log lines with seeded numbers): every
 * chunk distinct, none zero, compressing about 3:1.
 */
export async function makeTextImage(path: string, sizeBytes: number, seed: string): Promise<string> {
  const words = 'kernel module disk block sector inode journal system user config error warning info debug service network packet buffer cache page memory'.split(' ');
  const rnd = prng(Number.parseInt(sha256(Buffer.from(seed)).slice(0, 8), 16));
  const fh = await fsp.open(path, 'w');
  try {
    for (let at = 0; at < sizeBytes; ) {
      const lines: string[] = [];
      for (let i = 0; i < 4096; i++) {
        const n = 4 + Math.floor(rnd() * 8);
        lines.push(`${Math.floor(rnd() * 1e12)} ${Array.from({ length: n }, () => words[Math.floor(rnd() * words.length)]).join(' ')} ${Math.floor(rnd() * 1e9)}\n`);
      }
      const buf = Buffer.from(lines.join('')).subarray(0, sizeBytes - at);
      await fh.write(buf, 0, buf.length, at);
      at += buf.length;
    }
  } finally {
    await fh.close();
  }
  return sha256File(path);
}
