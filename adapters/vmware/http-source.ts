/**
 * A snapshot disk read over datastore file access:
 * `GET /folder/<path>-flat.vmdk?dcPath=<dc>&dsName=<ds>` with `Range: bytes=a-b` and
 * the session cookie, the open-source path where VDDK's NBD/SAN modes are not
 * available. Each read must come back 206 with exactly the bytes asked for. A 503
 * (rate limited) is retried with exponential backoff; a dropped connection or a short
 * body is retried once on a new request (reads are idempotent), then CONNECT_FAILED.
 */
import { ChunkvaultError, isChunkvaultError } from '../../engine/errors.js';
import type { BlockSource } from '../../engine/source.js';
import { SESSION_COOKIE, transportError, vimRequest, type VimEndpoint } from './soap.js';

export interface FolderDiskOptions {
  readonly endpoint: VimEndpoint;
  /** Path inside the datastore, e.g. `vm1/disk1-flat.vmdk`. */
  readonly path: string;
  readonly datastore: string;
  readonly datacenter: string;
  readonly sizeBytes: number;
  /** The current session cookie (it may change when the client logs in again). */
  readonly cookie: () => string | null;
  readonly timeoutMs?: number;
  /** 503 retries before giving up (default 6). */
  readonly busyRetries?: number;
}

export class FolderDiskSource implements BlockSource {
  readonly sizeBytes: number;
  private closed = false;
  /** Requests answered 503, for tests and logs. */
  busy = 0;

  constructor(private readonly o: FolderDiskOptions) {
    this.sizeBytes = o.sizeBytes;
  }

  describe(): string {
    return `vsphere /folder [${this.o.datastore}] ${this.o.path} on ${this.o.endpoint.host}`;
  }

  async readInto(target: Uint8Array, offset: number): Promise<void> {
    if (this.closed) throw new ChunkvaultError('INVALID_ARGUMENT', 'read after close');
    if (offset + target.byteLength > this.sizeBytes) {
      throw new ChunkvaultError('SOURCE_TRUNCATED', 'read past the end of the disk', { details: { offset, length: target.byteLength, size: this.sizeBytes } });
    }
    if (target.byteLength === 0) return;
    try {
      await this.readBusy(target, offset);
    } catch (err) {
      if (!isChunkvaultError(err, 'CONNECT_FAILED')) throw err;
      await this.readBusy(target, offset);
    }
  }

  private async readBusy(target: Uint8Array, offset: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const status = await this.readOnce(target, offset);
      if (status === 'done') return;
      this.busy++;
      if (attempt >= (this.o.busyRetries ?? 6)) throw new ChunkvaultError('SOURCE_READ_FAILED', 'the host stayed busy (HTTP 503) on a range read', { details: { offset, attempts: attempt + 1 } });
      await new Promise((r) => setTimeout(r, 10 * 2 ** attempt));
    }
  }

  private async readOnce(target: Uint8Array, offset: number): Promise<'done' | 'busy'> {
    const query = new URLSearchParams({ dcPath: this.o.datacenter, dsName: this.o.datastore });
    const path = `/folder/${this.o.path.split('/').map(encodeURIComponent).join('/')}?${query.toString()}`;
    const headers: Record<string, string> = { range: `bytes=${offset}-${offset + target.byteLength - 1}` };
    const cookie = this.o.cookie();
    if (cookie) headers['cookie'] = `${SESSION_COOKIE}=${cookie}`;
    const res = await vimRequest(this.o.endpoint, { method: 'GET', path, headers, timeout: this.o.timeoutMs ?? 60_000 });
    if (res.statusCode === 503) {
      res.resume();
      return 'busy';
    }
    if (res.statusCode !== 206) {
      res.resume();
      throw new ChunkvaultError('SOURCE_READ_FAILED', `/folder answered HTTP ${res.statusCode} to a range read of ${this.o.path}`, { details: { status: res.statusCode ?? 0, offset, path: this.o.path } });
    }
    let at = 0;
    try {
      for await (const part of res) {
        const buf = part as Buffer;
        if (at + buf.byteLength > target.byteLength) throw new ChunkvaultError('PROTOCOL_ERROR', '/folder sent more than the range', { details: { offset } });
        target.set(buf, at);
        at += buf.byteLength;
      }
    } catch (err) {
      throw transportError(this.o.endpoint, err);
    }
    if (at !== target.byteLength) throw new ChunkvaultError('CONNECT_FAILED', '/folder ended the range early', { details: { offset, expected: target.byteLength, got: at } });
    return 'done';
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
