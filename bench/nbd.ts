/**
 * Backup throughput over NBD against the transport's limit.
 *
 *   node dist/bench/nbd.js [--quick] [--json FILE]
 *
 * A 1 GiB qcow2 (256 MiB with --quick), laid out in 16 MiB groups of 8 MiB random,
 * 4 MiB text-like and 4 MiB zero data (zeros left unallocated by `qemu-img convert`),
 * is served by `qemu-nbd -r` over a unix socket and over TCP on 127.0.0.1. For each
 * transport:
 *
 * - nbdcopy: `nbdcopy URI /dev/null`, libnbd's copier (4 connections, 64 requests in
 *   flight, skips zero extents): the reference for what the transport can deliver;
 * - client: our NbdClient reading the allocated extents in 256 KiB reads into a
 *   discarded buffer (the client alone, no engine);
 * - backup: a full `NbdFrontEnd` backup into a fresh repository (hashing, zero check,
 *   zstd -1, containers, index), i.e. what a user gets;
 * and once, over a private unix socket: the `kvm:` front-end (bitmap steps and its
 * own qemu-nbd included).
 *
 * Every rate is the image's allocated bytes over wall time; "vs nbdcopy" is nbdcopy's
 * time over this row's time on the same transport (1.00 = as fast as the transport
 * allows). The image sits in the page cache, so disks do not limit anything here.
 * Each row is the best of two runs; the machine is shared, and the report prints how
 * busy other processes kept it.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, openSync, closeSync, writeSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type AddressInfo } from 'node:net';
import { KvmImageFrontEnd, NbdClient, NbdFrontEnd, type FrontEnd } from '../adapters/index.js';
import { Repository } from '../engine/index.js';
import { runBackupJob } from '../src/jobs.js';
import { MIB, syntheticVmData } from './_data.js';
import { bytes, machineInfo, parseArgs, printMachine, printTable, watchOtherLoad, writeJson } from './_report.js';

const GROUP = 16 * MIB;
const READ = 256 * 1024;

interface Row {
  transport: string;
  name: string;
  seconds: number;
  mbps: number;
  vsNbdcopy: number | null;
}

/** Writes the raw layout, converts it to qcow2 (zeros unallocated); returns allocated bytes. */
function buildImage(dir: string, size: number): { image: string; allocated: number } {
  const raw = join(dir, 'bench.raw');
  const image = join(dir, 'bench.qcow2');
  const fd = openSync(raw, 'w');
  try {
    for (let at = 0, g = 0; at < size; at += GROUP, g++) {
      writeSync(fd, randomBytes(GROUP / 2), 0, GROUP / 2, at);
      const text = syntheticVmData(GROUP / 4, 0x7e57 + g, { text: 1, exec: 0, random: 0, zero: 0 });
      writeSync(fd, text, 0, text.length, at + GROUP / 2);
      writeSync(fd, Buffer.alloc(1), 0, 1, at + GROUP - 1); // sizes the file; the zero quarter stays a hole
    }
  } finally {
    closeSync(fd);
  }
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, image]);
  rmSync(raw);
  return { image, allocated: (size / GROUP) * (GROUP * 3) / 4 };
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Starts qemu-nbd (read-only, persistent, 8 clients) and waits for its pid file. */
async function startQemuNbd(dir: string, image: string, where: { socket: string } | { port: number }): Promise<{ uri: string; stop: () => Promise<void> }> {
  const pidFile = join(dir, `qemu-nbd-${'socket' in where ? 'unix' : where.port}.pid`);
  const address = 'socket' in where ? ['-k', where.socket] : ['-b', '127.0.0.1', '-p', String(where.port)];
  const child: ChildProcess = spawn('qemu-nbd', ['-r', '-t', '-e', '8', '-f', 'qcow2', '-x', 'disk', `--pid-file=${pidFile}`, ...address, image], { stdio: 'ignore' });
  const deadline = Date.now() + 15_000;
  while (!existsSync(pidFile) || !/^\d+/.test(readFileSync(pidFile, 'utf8'))) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error('qemu-nbd did not start');
    await new Promise((r) => setTimeout(r, 20));
  }
  const uri = 'socket' in where ? `nbd+unix:///disk?socket=${where.socket}` : `nbd://127.0.0.1:${where.port}/disk`;
  return {
    uri,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function best(runs: number, fn: () => Promise<void>): Promise<number> {
  let min = Infinity;
  for (let i = 0; i < runs; i++) min = Math.min(min, await timed(fn));
  return min;
}

function nbdcopy(uri: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('nbdcopy', [uri, '/dev/null'], { stdio: 'inherit' });
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`nbdcopy exited ${code}`))));
  });
}

/** Our client alone: allocated extents in 256 KiB reads, `inFlight` at a time, over `connections`. */
async function clientRead(uri: string, connections: number, inFlight: number): Promise<void> {
  const client = await NbdClient.connect({ uri, connections, maxInFlight: inFlight });
  try {
    const pieces: { offset: number; length: number }[] = [];
    for await (const e of client.allocatedExtents()) {
      for (let at = e.offset; at < e.offset + e.length; at += READ) pieces.push({ offset: at, length: Math.min(READ, e.offset + e.length - at) });
    }
    let next = 0;
    const worker = async (): Promise<void> => {
      const buf = new Uint8Array(READ);
      while (next < pieces.length) {
        const p = pieces[next++]!;
        await client.readInto(buf.subarray(0, p.length), p.offset);
      }
    };
    await Promise.all(Array.from({ length: inFlight }, worker));
  } finally {
    await client.close();
  }
}

/** A full backup with `frontEnd` into a fresh repository. */
async function backupInto(dir: string, frontEnd: FrontEnd): Promise<void> {
  const repoDir = mkdtempSync(join(dir, 'repo-'));
  await Repository.init(repoDir, {});
  const repo = await Repository.open(repoDir);
  try {
    await runBackupJob({ repo, frontEnd, vm: 'bench', disk: 'disk' });
  } finally {
    await repo.close();
    rmSync(repoDir, { recursive: true, force: true });
  }
}

async function benchTransport(dir: string, image: string, allocated: number, runs: number, transport: 'unix' | 'tcp'): Promise<Row[]> {
  const where = transport === 'unix' ? { socket: join(dir, 'nbd.sock') } : { port: await freePort() };
  const server = await startQemuNbd(dir, image, where);
  const rows: Row[] = [];
  try {
    const ref = await best(runs, () => nbdcopy(server.uri));
    const add = (name: string, seconds: number): void => {
      rows.push({ transport, name, seconds, mbps: allocated / seconds / 1e6, vsNbdcopy: ref / seconds });
    };
    add('nbdcopy -> /dev/null (4 conns)', ref);
    add('NbdClient read, 1 conn, 16 in flight', await best(runs, () => clientRead(server.uri, 1, 16)));
    add('NbdClient read, 4 conns, 16 in flight', await best(runs, () => clientRead(server.uri, 4, 16)));
    add('backup nbd: (NbdFrontEnd, 1 conn)', await best(runs, () => backupInto(dir, new NbdFrontEnd(server.uri, { connections: 1 }))));
    add('backup nbd: (NbdFrontEnd, 4 conns)', await best(runs, () => backupInto(dir, new NbdFrontEnd(server.uri, { connections: 4 }))));
  } finally {
    await server.stop();
  }
  if (transport === 'unix') {
    // The kvm: front-end runs its own qemu-nbd, which needs the image free of ours.
    const seconds = await best(runs, () => backupInto(dir, new KvmImageFrontEnd(image, { workDir: dir })));
    const ref = rows[0]!.seconds;
    rows.push({ transport, name: 'backup kvm: (own qemu-nbd, 2 conns)', seconds, mbps: allocated / seconds / 1e6, vsNbdcopy: ref / seconds });
  }
  return rows;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const size = args.quick ? 256 * MIB : 1024 * MIB;
  const runs = 2;
  const machine = machineInfo();
  printMachine(machine);
  const dir = mkdtempSync(join(tmpdir(), 'chunkvault-bench-nbd-'));
  try {
    const { image, allocated } = buildImage(dir, size);
    console.log(`image: ${bytes(size)} qcow2, ${bytes(allocated)} allocated (1/2 random, 1/4 text-like, 1/4 zero unallocated)`);
    const others = watchOtherLoad();
    const rows = [...(await benchTransport(dir, image, allocated, runs, 'unix')), ...(await benchTransport(dir, image, allocated, runs, 'tcp'))];
    const load = others();
    printTable(
      ['transport', 'reader', 'seconds', 'MB/s', 'vs nbdcopy'],
      rows.map((r) => [r.transport, r.name, r.seconds.toFixed(2), r.mbps.toFixed(0), r.vsNbdcopy === null ? '-' : r.vsNbdcopy.toFixed(2)]),
    );
    console.log(`other processes kept ${load.toFixed(2)} cores busy on average`);
    if (args.json) writeJson(args.json, { machine, sizeBytes: size, allocatedBytes: allocated, otherLoad: load, rows });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
