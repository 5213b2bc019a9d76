/**
 * The repository config (FORMAT.md "config.json"): written once by `init`, read and
 * validated on every open. A newer format version is refused, never guessed at.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import {
  DEFAULT_CHUNK_SIZE,
  DEFAULT_CONTAINER_TARGET_BYTES,
  DEFAULT_LZ4_ACCELERATION,
  FORMAT_VERSION,
  MAX_LZ4_ACCELERATION,
  MAX_CHUNK_SIZE,
  MIN_CHUNK_SIZE,
} from './constants.js';
import type { CompressionSetting } from './codecs.js';
import { ChunkvaultError } from './errors.js';
import { writeFileAtomic } from './_fs.js';
import { ownedTmp } from './_owner.js';

export interface RepoConfig {
  readonly format: number;
  readonly id: string;
  readonly created: string;
  readonly chunkSize: number;
  readonly digest: 'sha256';
  readonly checkHash: 'xxh64';
  readonly compression: CompressionSetting;
  readonly containerTargetBytes: number;
}

export interface InitOptions {
  readonly chunkSize?: number;
  readonly compression?: CompressionSetting;
  readonly containerTargetBytes?: number;
}

/**
 * LZ4 by measurement (bench/RESULTS.md "End to end"): on 2 cores it backs up a 2 GiB
 * image 1.2-1.4x faster than zstd level 1 and restores as fast, for a repository about
 * 1.2x larger; `--compression zstd:1` (or higher) trades that speed for space. The
 * LZ4 acceleration is DEFAULT_LZ4_ACCELERATION (`lz4:1` is LZ4's own default).
 */
export const DEFAULT_COMPRESSION: CompressionSetting = { codec: 'lz4', level: DEFAULT_LZ4_ACCELERATION };

export function validateChunkSize(size: number): number {
  const pow2 = Number.isInteger(size) && size > 0 && (size & (size - 1)) === 0;
  if (!pow2 || size < MIN_CHUNK_SIZE || size > MAX_CHUNK_SIZE) {
    throw new ChunkvaultError('INVALID_ARGUMENT', `chunk size ${size} must be a power of two from 64 KiB to 4 MiB`);
  }
  return size;
}

export function newConfig(options: InitOptions): RepoConfig {
  return {
    format: FORMAT_VERSION,
    id: randomBytes(16).toString('hex'),
    created: new Date().toISOString(),
    chunkSize: validateChunkSize(options.chunkSize ?? DEFAULT_CHUNK_SIZE),
    digest: 'sha256',
    checkHash: 'xxh64',
    compression: options.compression ?? DEFAULT_COMPRESSION,
    containerTargetBytes: options.containerTargetBytes ?? DEFAULT_CONTAINER_TARGET_BYTES,
  };
}

function invalid(message: string): ChunkvaultError {
  return new ChunkvaultError('REPO_CONFIG_INVALID', `repository config: ${message}`);
}

/** Parses and validates config.json text. */
export function parseConfig(text: string): RepoConfig {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new ChunkvaultError('REPO_CONFIG_INVALID', 'repository config is not valid JSON', { cause: err });
  }
  if (typeof raw !== 'object' || raw === null) throw invalid('not an object');
  if (typeof raw.format !== 'number' || !Number.isInteger(raw.format) || raw.format < 1) throw invalid('bad format');
  if (raw.format > FORMAT_VERSION) {
    throw new ChunkvaultError(
      'REPO_VERSION_UNSUPPORTED',
      `repository format ${raw.format} is newer than this program supports (${FORMAT_VERSION}); upgrade chunkvault`,
      { details: { format: raw.format, supported: FORMAT_VERSION } },
    );
  }
  if (raw.digest !== 'sha256') throw invalid(`unsupported digest ${String(raw.digest)}`);
  if (raw.checkHash !== 'xxh64') throw invalid(`unsupported check hash ${String(raw.checkHash)}`);
  const comp = raw.compression as CompressionSetting | undefined;
  if (!comp || !['zstd', 'lz4', 'none'].includes(comp.codec) || !Number.isInteger(comp.level)) {
    throw invalid('bad compression');
  }
  // lz4 level 0 is what earlier versions wrote for LZ4's default acceleration (1).
  if (comp.codec === 'lz4' && (comp.level < 0 || comp.level > MAX_LZ4_ACCELERATION)) throw invalid('bad lz4 acceleration');
  if (typeof raw.chunkSize !== 'number') throw invalid('bad chunkSize');
  validateChunkSize(raw.chunkSize);
  if (typeof raw.containerTargetBytes !== 'number' || raw.containerTargetBytes < raw.chunkSize) {
    throw invalid('bad containerTargetBytes');
  }
  return raw as unknown as RepoConfig;
}

export async function readConfig(repoDir: string): Promise<RepoConfig> {
  let text: string;
  try {
    text = await fsp.readFile(join(repoDir, 'config.json'), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ChunkvaultError('REPO_NOT_FOUND', `no chunkvault repository at ${repoDir} (run "chunkvault init")`, {
        details: { repo: repoDir },
      });
    }
    throw err;
  }
  return parseConfig(text);
}

/** Rewrites config.json atomically (tmp + rename + directory fsync): format upgrades only. */
export async function writeConfig(repoDir: string, config: RepoConfig): Promise<void> {
  await writeFileAtomic(ownedTmp(join(repoDir, 'tmp'), 'config.json.tmp'), join(repoDir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
}
