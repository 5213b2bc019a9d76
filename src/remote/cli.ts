/**
 * CLI actions for `--repo http(s)://...`: backup, points, restore and stats through a
 * media agent. Output mirrors the local commands; figures the agent keeps to itself
 * (storage-wide stored bytes) are absent.
 */
import { ChunkvaultError } from '../../engine/index.js';
import { createProgress } from '../cli/progress.js';
import { printJson, table } from '../cli/output.js';
import { formatBytes } from '../units.js';
import { RemoteAgent, remoteCredentials } from './client.js';
import { listRemotePoints, remoteBackup, remoteRestore, resolveRemotePoint } from './commands.js';


async function withAgent<T>(url: string, fn: (agent: RemoteAgent) => Promise<T>): Promise<T> {
  const agent = new RemoteAgent(url, remoteCredentials(url));
  try {
    return await fn(agent);
  } finally {
    agent.close();
  }
}

function signalOnInterrupt(): AbortSignal {
  const ac = new AbortController();
  process.once('SIGINT', () => ac.abort());
  process.once('SIGTERM', () => ac.abort());
  return ac.signal;
}

export async function cmdRemoteBackup(url: string, sources: string[], o: { vm?: string; disk?: string; changedExtents?: string; bitmap?: string; full?: boolean; json?: boolean }): Promise<number> {
  if (sources.length !== 1) throw new ChunkvaultError('USAGE', 'a media agent backs up one source per command');
  if (o.vm === undefined) throw new ChunkvaultError('USAGE', "required option '--vm <vm>' not specified");
  return withAgent(url, async (agent) => {
    const progress = createProgress('backup');
    const r = await remoteBackup(agent, {
      source: sources[0]!,
      vm: o.vm!,
      ...(o.disk ? { disk: o.disk } : {}),
      ...(o.changedExtents ? { changedExtentsFile: o.changedExtents } : {}),
      ...(o.bitmap !== undefined ? { bitmap: o.bitmap } : {}),
      full: o.full ?? false,
      signal: signalOnInterrupt(),
      onProgress: (p) => progress.update(p.done, p.total),
    });
    progress.finish();
    const p = r.point;
    if (o.json) printJson({ point: p.id, vm: p.vm, disk: p.disk, parent: p.parent, mode: p.mode, sizeBytes: p.sizeBytes, bytesRead: r.bytesRead, chunksRead: r.chunksRead, chunksZero: r.chunksZero, chunksUploaded: r.chunksUploaded, bytesUploaded: r.bytesUploaded, bytesSent: r.bytesSent, durationMs: r.durationMs });
    else process.stdout.write(`point ${p.id} committed on ${url}: vm ${p.vm} disk ${p.disk} (${p.mode}, ${formatBytes(p.sizeBytes)})\n  read ${formatBytes(r.bytesRead)} in ${(r.durationMs / 1000).toFixed(2)} s; uploaded ${r.chunksUploaded} chunks (${formatBytes(r.bytesUploaded)}), ${formatBytes(r.bytesSent)} sent in all; ${r.chunksZero} zero chunks\n`);
    return 0;
  });
}

export async function cmdRemotePoints(url: string, o: { vm?: string; disk?: string; json?: boolean }): Promise<number> {
  return withAgent(url, async (agent) => {
    const points = await listRemotePoints(agent, { ...(o.vm ? { vm: o.vm } : {}), ...(o.disk ? { disk: o.disk } : {}) });
    if (o.json) printJson(points);
    else process.stdout.write(table(['ID', 'VM', 'DISK', 'TIME (UTC)', 'MODE', 'SIZE', 'PARENT'], points.map((p) => [p.id, p.vm, p.disk, p.time.replace('T', ' ').slice(0, 19), p.mode, formatBytes(p.sizeBytes), p.parent ?? '-']), [5]) + '\n');
    return 0;
  });
}

export async function cmdRemoteRestore(url: string, ref: string, o: { vm?: string; disk?: string; output: string; buffered?: boolean; json?: boolean }): Promise<number> {
  return withAgent(url, async (agent) => {
    const point = await resolveRemotePoint(agent, ref, { ...(o.vm ? { vm: o.vm } : {}), ...(o.disk ? { disk: o.disk } : {}) });
    const started = Date.now();
    await remoteRestore(agent, point, o.output, signalOnInterrupt(), { direct: !o.buffered });
    const ms = Date.now() - started;
    if (o.json) printJson({ point: point.id, output: o.output, sizeBytes: point.sizeBytes, durationMs: ms, bytesReceived: agent.bytesReceived });
    else if (o.output !== '-') process.stdout.write(`restored point ${point.id} (${formatBytes(point.sizeBytes)}) from ${url} to ${o.output} in ${(ms / 1000).toFixed(2)} s\n`);
    return 0;
  });
}

export async function cmdRemoteStats(url: string, o: { json?: boolean }): Promise<number> {
  return withAgent(url, async (agent) => {
    const s = await agent.json<Record<string, number | string>>('GET', '/v1/stats');
    if (o.json) printJson(s);
    else process.stdout.write(`tenant ${s['tenant']}: ${s['points']} points of ${s['vms']} VMs; logical ${formatBytes(Number(s['logicalBytes']))}, zero ${formatBytes(Number(s['zeroBytes']))}, unique ${formatBytes(Number(s['uniqueBytes']))} in ${s['uniqueChunks']} chunks; dedup ${Number(s['dedupRatio']).toFixed(2)}x\n`);
    return 0;
  });
}
