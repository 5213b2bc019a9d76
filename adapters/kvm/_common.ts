/**
 * Pieces both KVM front-ends share: their options, a private work directory (NBD
 * socket, pid file, fleece overlay), the source wrapper that names the disk in the
 * point record instead of a temporary socket, and `Steps`, which runs every cleanup
 * step even when earlier ones fail and reports failures as warnings (a plan's
 * `finish` must not throw for cleanup problems).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { normalizeExtents, toChunkvaultError, type BlockSource, type Extent } from '../../engine/index.js';
import type { NbdClient, NbdClientOptions } from '../nbd/index.js';
import { CONTEXT_BASE_ALLOCATION, CONTEXT_DIRTY_BITMAP_PREFIX } from '../nbd/index.js';

/** Options of both KVM front-ends. */
export interface KvmFrontEndOptions {
  /** Parent of the private work directory (default: the OS temp dir). */
  readonly workDir?: string;
  /** NBD connections to read with (default 2). */
  readonly connections?: number;
  /** NbdClient tuning (timeouts, requests in flight). */
  readonly client?: Partial<Omit<NbdClientOptions, 'uri' | 'metaContexts' | 'connections'>>;
  /** Where cleanup problems go (default: one line on stderr). */
  readonly onWarning?: (message: string) => void;
}

export const DEFAULT_CONNECTIONS = 2;

export function defaultWarning(message: string): void {
  process.stderr.write(`chunkvault: warning: ${message}\n`);
}

/** A fresh private directory; sockets inside must stay under the 107-byte sun_path limit. */
export async function makeWorkDir(parent: string | undefined): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(parent ?? tmpdir(), 'chunkvault-kvm-'));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** The NBD client, described as the disk it reads (`kvm:...`), not the temporary socket. */
export class NamedSource implements BlockSource {
  constructor(
    readonly client: NbdClient,
    private readonly label: string,
  ) {}

  get sizeBytes(): number {
    return this.client.sizeBytes;
  }

  readInto(target: Uint8Array, offset: number): Promise<void> {
    return this.client.readInto(target, offset);
  }

  describe(): string {
    return this.label;
  }

  close(): Promise<void> {
    return this.client.close();
  }
}

export function contextsFor(bitmaps: readonly string[]): string[] {
  return [CONTEXT_BASE_ALLOCATION, ...bitmaps.map((b) => CONTEXT_DIRTY_BITMAP_PREFIX + b)];
}

async function collect(it: AsyncIterable<Extent>): Promise<Extent[]> {
  const out: Extent[] = [];
  for await (const e of it) out.push(e);
  return out;
}

/** Union of the dirty extents of `bitmaps`, or the allocated extents when none is given. */
export async function extentsToRead(client: NbdClient, bitmaps: readonly string[]): Promise<Extent[]> {
  if (bitmaps.length === 0) return collect(client.allocatedExtents());
  const all: Extent[] = [];
  for (const b of bitmaps) all.push(...(await collect(client.dirtyExtents(b))));
  return normalizeExtents(all);
}

/**
 * Runs cleanup steps in order; each failure becomes a warning and the next step
 * still runs. `run` resolves with the number of failed steps.
 */
export class Steps {
  private failed = 0;

  constructor(private readonly warn: (message: string) => void) {}

  async step(what: string, fn: () => Promise<unknown>): Promise<boolean> {
    try {
      await fn();
      return true;
    } catch (err) {
      this.failed++;
      this.warn(`${what}: ${toChunkvaultError(err, what).message}`);
      return false;
    }
  }

  get failures(): number {
    return this.failed;
  }
}
