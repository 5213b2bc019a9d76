/**
 * A VDI read over HTTP: `GET /export_raw_vdi?vdi=REF&format=raw&session_id=S` with a
 * `Range` header per read, the transport when the pool does not serve NBD. Each
 * read must come back 206 with exactly the bytes asked for; a dropped connection is
 * tried again once on a new request (reads are idempotent).
 */
import { ChunkvaultError, isChunkvaultError } from '../../engine/errors.js';
import type { BlockSource } from '../../engine/source.js';
import { requestOptions, sendRequest, transportError, type XapiEndpoint } from './xapi.js';

export interface HttpVdiOptions {
  readonly endpoint: XapiEndpoint;
  readonly vdiRef: string;
  readonly sessionId: string;
  readonly sizeBytes: number;
  readonly timeoutMs?: number;
}

export class HttpVdiSource implements BlockSource {
  readonly sizeBytes: number;
  private closed = false;

  constructor(private readonly o: HttpVdiOptions) {
    this.sizeBytes = o.sizeBytes;
  }

  describe(): string {
    return `xapi export_raw_vdi ${this.o.endpoint.host}:${this.o.endpoint.port} vdi ${this.o.vdiRef}`;
  }

  async readInto(target: Uint8Array, offset: number): Promise<void> {
    if (this.closed) throw new ChunkvaultError('INVALID_ARGUMENT', 'read after close');
    if (offset + target.byteLength > this.sizeBytes) {
      throw new ChunkvaultError('SOURCE_TRUNCATED', 'read past the end of the VDI', { details: { offset, length: target.byteLength, size: this.sizeBytes } });
    }
    if (target.byteLength === 0) return;
    try {
      await this.readOnce(target, offset);
    } catch (err) {
      if (!isChunkvaultError(err, 'CONNECT_FAILED')) throw err;
      await this.readOnce(target, offset);
    }
  }

  private async readOnce(target: Uint8Array, offset: number): Promise<void> {
    const query = new URLSearchParams({ vdi: this.o.vdiRef, format: 'raw', session_id: this.o.sessionId });
    const options = requestOptions(this.o.endpoint, 'GET', `/export_raw_vdi?${query.toString()}`, this.o.timeoutMs ?? 60_000);
    options.headers = { range: `bytes=${offset}-${offset + target.byteLength - 1}` };
    const res = await sendRequest(this.o.endpoint, options);
    if (res.statusCode !== 206) {
      res.resume();
      throw new ChunkvaultError('SOURCE_READ_FAILED', `export_raw_vdi answered HTTP ${res.statusCode} to a range read`, { details: { status: res.statusCode ?? 0, offset } });
    }
    let at = 0;
    try {
      for await (const part of res) {
        const buf = part as Buffer;
        if (at + buf.byteLength > target.byteLength) throw new ChunkvaultError('PROTOCOL_ERROR', 'export_raw_vdi sent more than the range', { details: { offset } });
        target.set(buf, at);
        at += buf.byteLength;
      }
    } catch (err) {
      throw transportError(this.o.endpoint, err);
    }
    if (at !== target.byteLength) {
      throw new ChunkvaultError('CONNECT_FAILED', 'export_raw_vdi ended the range early', { details: { offset, expected: target.byteLength, got: at } });
    }
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
