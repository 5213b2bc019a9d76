/**
 * `chunkvault estimate`: what a repository would store for each chunk size, chunking
 * scheme (fixed, or FastCDC with --cdc) and codec, read from any source `backup`
 * accepts. Writes no repository (only a temporary digest set under the OS temp dir).
 */
import { ChunkvaultError, parseCompression, validateChunkSize, type CompressionSetting } from '../../engine/index.js';
import type { EstimateReport, OpenedSource, SchemeEstimate } from '../estimate/index.js';
import { frontEndFor, vmFrontEndFor } from '../jobs.js';
import type { VmFrontEnd } from '../../adapters/index.js';
import { formatBytes, formatRatio, parseSize } from '../units.js';
import { interruptSignal } from './commands.js';
import { printJson, table } from './output.js';
import { createProgress } from './progress.js';

export interface EstimateCliOptions {
  chunkSizes?: string;
  codecs?: string;
  cdc?: boolean;
  sample?: string;
  seed?: string;
  threads?: string;
  json?: boolean;
}

export const DEFAULT_ESTIMATE_CHUNK_SIZES = '64K,256K,1M,4M';
export const DEFAULT_ESTIMATE_CODECS = 'lz4,zstd:1,zstd:3';

function parseList<T>(text: string, parse: (item: string) => T): T[] {
  const items = text.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (items.length === 0) throw new ChunkvaultError('INVALID_ARGUMENT', `empty list "${text}"`);
  return items.map(parse);
}

function parseNumber(text: string, what: string, min: number, max: number): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n < min || n > max) throw new ChunkvaultError('INVALID_ARGUMENT', `${what} "${text}" must be a number from ${min} to ${max}`);
  return n;
}

/** Opens a source the way `backup` does (whole disk, no parent), for reading only. */
async function openSource(source: string): Promise<OpenedSource[]> {
  const vm = await vmFrontEndFor(source);
  if (vm) return openVm(vm);
  const frontEnd = await frontEndFor(source);
  const plan = await frontEnd.plan({ parent: null, forceFull: true });
  const release = async () => {
    try {
      await plan.finish(false);
    } finally {
      await plan.source.close();
    }
  };
  return [{ source: plan.source, name: frontEnd.diskName, release }];
}

/**
 * A VM source (xen://): every disk, from one consistent view. The first disk's
 * `release` finishes every disk plan, closes every source, then finishes the VM plan
 * (in that order, as the VM plan requires); the others release nothing.
 */
async function openVm(frontEnd: VmFrontEnd): Promise<OpenedSource[]> {
  const plan = await frontEnd.plan({ parentOf: async () => null, forceFull: true });
  const releaseAll = async () => {
    for (const { plan: d } of plan.disks) {
      await d.finish(false).catch(() => undefined);
      await d.source.close().catch(() => undefined);
    }
    await plan.finish(false);
  };
  return plan.disks.map(({ disk, plan: d }, i) => ({ source: d.source, name: `${frontEnd.vmName}/${disk}`, release: i === 0 ? releaseAll : async () => undefined }));
}

export async function cmdEstimate(sources: string[], o: EstimateCliOptions): Promise<number> {
  const chunkSizes = [...new Set(parseList(o.chunkSizes ?? DEFAULT_ESTIMATE_CHUNK_SIZES, (s) => validateChunkSize(parseSize(s))))].sort((a, b) => a - b);
  const codecs: CompressionSetting[] = parseList(o.codecs ?? DEFAULT_ESTIMATE_CODECS, (s) => parseCompression(s, 3));
  const samplePercent = o.sample === undefined ? undefined : parseNumber(o.sample.replace(/%$/, ''), '--sample', Number.MIN_VALUE, 100);
  const progress = createProgress('estimate');
  // Loaded here: the estimator (and its LevelDB spill set) is not needed by other commands.
  const { estimate } = await import('../estimate/index.js');
  const report = await estimate({
    sources,
    open: openSource,
    chunkSizes,
    codecs,
    cdc: o.cdc ?? false,
    ...(samplePercent !== undefined ? { samplePercent } : {}),
    seed: o.seed === undefined ? 1 : parseNumber(o.seed, '--seed', 0, 2 ** 32 - 1),
    ...(o.threads !== undefined ? { threads: parseNumber(o.threads, '--threads', 1, 256) } : {}),
    signal: interruptSignal(),
    onProgress: (done, total) => progress.update(done, total),
  });
  progress.finish();
  if (o.json) printJson(report);
  else process.stdout.write(formatEstimate(report));
  return 0;
}

function schemeLabel(s: SchemeEstimate): string {
  return `${s.kind === 'cdc' ? 'cdc ~' : 'fixed '}${formatBytes(s.chunkSize)}`;
}

function withInterval(value: string, iv: { low: number; high: number } | undefined, fmt: (n: number) => string): string {
  return iv ? `${value} [${fmt(iv.low)}-${fmt(iv.high)}]` : value;
}

/** The estimate as text tables: one for dedup, one for stored size per codec. */
export function formatEstimate(r: EstimateReport): string {
  const head = r.sample
    ? `sampled ${r.sample.regionsRead} of ${r.sample.regionsTotal} regions of ${formatBytes(r.sample.regionBytes)} (${r.sample.percent}%, seed ${r.sample.seed}); [low-high] = 95% interval\n`
    : '';
  const dedup = table(
    ['SCHEME', 'LOGICAL', 'ZERO', 'UNIQUE', 'DEDUP', ...r.sources.map((s) => `DEDUP ${s.name}`), 'INDEX', 'MAPS'],
    r.schemes.map((s) => [
      schemeLabel(s),
      formatBytes(s.logicalBytes),
      withInterval(`${formatBytes(s.zeroBytes)} (${(s.zeroShare * 100).toFixed(1)}%)`, s.intervals?.zeroBytes, formatBytes),
      withInterval(formatBytes(s.uniqueBytes), s.intervals?.uniqueBytes, formatBytes),
      withInterval(formatRatio(s.dedupRatio), s.intervals?.dedupRatio, (n) => n.toFixed(2)),
      ...s.perSource.map((p) => formatRatio(p.dedupRatio)),
      formatBytes(s.indexBytes),
      formatBytes(s.pointMapBytes),
    ]),
    [1, 2, 3, 4, ...r.sources.map((_, i) => 5 + i), 5 + r.sources.length, 6 + r.sources.length],
  );
  const rows = r.schemes.flatMap((s) => s.codecs.map((c) => [schemeLabel(s), c.codec, withInterval(formatBytes(c.storedBytes), c.interval, formatBytes), formatRatio(c.compressionRatio), formatRatio(c.totalRatio)]));
  const stored = rows.length > 0 ? `\n\n${table(['SCHEME', 'CODEC', 'STORED', 'COMPRESSION', 'TOTAL'], rows, [2, 3, 4])}` : '';
  const rate = r.durationMs > 0 ? `${formatBytes((r.bytesRead / r.durationMs) * 1000)}/s` : '-';
  return `${head}${dedup}${stored}\n\nread ${formatBytes(r.bytesRead)} in ${(r.durationMs / 1000).toFixed(2)} s (${rate})\n`;
}
