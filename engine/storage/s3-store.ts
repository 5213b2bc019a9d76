/**
 * `ObjectStore` over the S3 API (@aws-sdk/client-s3), for any endpoint: AWS, Ceph RGW,
 * others. Path-style addressing by default; a `prefix` gives each user its own name
 * space inside a shared bucket.
 *
 * Integrity, end to end:
 * - every request body carries Content-MD5, which the server verifies (BadDigest);
 *   over plain http the SigV4 payload hash (SHA-256) is verified as well;
 * - bodies up to `partSize` go in one PUT, larger ones as a multipart upload of
 *   `partSize` parts; each part's returned ETag must be its MD5;
 * - after the upload the object's ETag is read back with HeadObject (radosgw Pacific
 *   answers CompleteMultipartUpload with an empty ETag) and must equal the MD5 (single
 *   PUT) or MD5-of-part-MD5s "-N" (multipart) computed here, else the object is deleted;
 * - objects carry `x-amz-meta-cv-part-size`, so every full `get` recomputes the ETag
 *   and detects an object damaged at rest (OBJECT_CORRUPT).
 *
 * Failures: the SDK's own retries are off (maxAttempts 1); each request is retried
 * here (_retry.ts) on throttling, 5xx, timeouts and network resets, and mapped to a
 * stable code (_s3-errors.ts). A failed multipart upload is aborted: S3 never shows a
 * partial object.
 *
 * Conditional create: `If-None-Match: *` on PutObject is atomic in radosgw (412 when
 * the key exists). CompleteMultipartUpload ignores it (measured: it overwrote), so
 * bodies above `partSize` are checked with a HEAD first, which is not atomic
 * (`supports.maxAtomicCreateBytes`).
 */
import { createHash } from 'node:crypto';
import { Agent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { createRequire } from 'node:module';
import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import { ChunkvaultError } from '../errors.js';
import { DEFAULT_RETRY, type RetryPolicy, withRetry } from './_retry.js';
import { describeFailure, isRetryable, toStoreError } from './_s3-errors.js';
import {
  type ListOptions,
  type ObjectEntry,
  type ObjectStore,
  type PutBody,
  type PutOptions,
  type StoreSupports,
  alreadyExists,
  bodyLength,
  checkKey,
  checkRange,
  fixedPieces,
  isStreamBody,
  rangeBeyondEnd,
} from './object-store.js';

type Sdk = typeof import('@aws-sdk/client-s3');
let loadedSdk: Sdk | undefined;

/** The AWS SDK, loaded on first use: it costs ~0.1 s of start-up that local repositories never need. */
function sdk(): Sdk {
  loadedSdk ??= createRequire(import.meta.url)('@aws-sdk/client-s3') as Sdk;
  return loadedSdk;
}

const MiB = 1024 * 1024;
/** S3's smallest part (except the last). */
const MIN_PART_BYTES = 5 * MiB;
const MAX_PARTS = 10_000;
const PART_SIZE_META = 'cv-part-size';

export interface S3StoreOptions {
  readonly bucket: string;
  /** Name space inside the bucket, '' or ending with '/' (default ''). */
  readonly prefix?: string;
  /** e.g. `http://127.0.0.1:7480`. Default: the SDK's (AWS_ENDPOINT_URL[_S3], config files, AWS). */
  readonly endpoint?: string;
  /** Default: AWS_REGION, AWS_DEFAULT_REGION, then the SDK's config files. */
  readonly region?: string;
  /** Default: the SDK's chain (environment, shared config and credentials files with AWS_PROFILE, ...). */
  readonly credentials?: { readonly accessKeyId: string; readonly secretAccessKey: string; readonly sessionToken?: string };
  /** Profile of the shared config files (default AWS_PROFILE or `default`). */
  readonly profile?: string;
  /** Path-style URLs (default true: RGW and most non-AWS stores need them). */
  readonly forcePathStyle?: boolean;
  /** Multipart part size and single-PUT limit (default 16 MiB, at least 5 MiB). */
  readonly partSize?: number;
  /** Parts of one upload in flight (default 4). */
  readonly partConcurrency?: number;
  /** TCP connect timeout (default 5 s). */
  readonly connectTimeoutMs?: number;
  /** Socket idle timeout within a request (default 30 s). */
  readonly idleTimeoutMs?: number;
  /** Whole-attempt timeout of one request, body included (default 120 s). */
  readonly attemptTimeoutMs?: number;
  readonly retry?: Partial<RetryPolicy>;
  /** Sockets per store (default 32). */
  readonly maxSockets?: number;
  /**
   * Re-hash every full `get` against the stored ETag (default true). Costs MD5 on every
   * byte read; a reader that checks its own hashes (container records) may turn it off.
   */
  readonly verifyReads?: boolean;
}

function normalisePrefix(prefix: string): string {
  if (prefix === '') return prefix;
  if (!prefix.endsWith('/')) {
    throw new ChunkvaultError('INVALID_ARGUMENT', `S3 prefix must end with '/': ${prefix}`, { details: { prefix } });
  }
  checkKey(prefix.slice(0, -1));
  return prefix;
}

/** MD5 of `data` (16 bytes). */
function md5(data: Uint8Array): Buffer {
  return createHash('md5').update(data).digest();
}

/** The ETag S3 gives an object uploaded in `partSize` parts (`partSize` 0: one PUT). */
export function expectedEtag(data: Uint8Array, partSize: number): string {
  if (partSize === 0 || data.byteLength <= partSize) return md5(data).toString('hex');
  const all = createHash('md5');
  let parts = 0;
  for (let at = 0; at < data.byteLength; at += partSize) {
    all.update(md5(data.subarray(at, at + partSize)));
    parts++;
  }
  return `${all.digest('hex')}-${parts}`;
}

const unquote = (etag: string | undefined): string => (etag ?? '').replace(/^"|"$/g, '');

/** Builds the SDK client: no SDK retries (ours are), checksums only where required (PEERS.md). */
function makeClient(options: S3StoreOptions): S3Client {
  const agentOptions = { keepAlive: true, maxSockets: options.maxSockets ?? 32 };
  const env = process.env;
  const config: S3ClientConfig = {
    forcePathStyle: options.forcePathStyle ?? true,
    maxAttempts: 1,
    // Pacific's radosgw lacks aws-chunked trailing checksums: streamed uploads fail
    // with 411 MissingContentLength unless these stay at WHEN_REQUIRED.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // The SDK sends large bodies with `Expect: 100-continue`; radosgw answering a quota
    // refusal to that left the request hanging until the SDK timed out (measured).
    expectContinueHeader: false,
    requestHandler: {
      connectionTimeout: options.connectTimeoutMs ?? 5_000,
      socketTimeout: options.idleTimeoutMs ?? 30_000,
      // Without the flag a request past its timeout only logs a warning.
      requestTimeout: options.attemptTimeoutMs ?? 120_000,
      throwOnRequestTimeout: true,
      httpAgent: new Agent(agentOptions),
      httpsAgent: new HttpsAgent(agentOptions),
    },
  };
  const region = options.region ?? env['AWS_REGION'] ?? env['AWS_DEFAULT_REGION'];
  if (region !== undefined) config.region = region;
  if (options.endpoint !== undefined) config.endpoint = options.endpoint;
  if (options.credentials !== undefined) config.credentials = options.credentials;
  if (options.profile !== undefined) config.profile = options.profile;
  // The SDK warns on every process that SDK releases after January 2027 will need Node
  // 22; the release locked in package-lock.json supports Node 20, so the warning only
  // alarms users of every s3:// command. An explicit setting by the user still wins.
  process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
  return new (sdk().S3Client)(config);
}

/** Creates `bucket` (as `options` reach it); an existing bucket of the same owner is fine. */
export async function createBucket(options: S3StoreOptions): Promise<void> {
  const client = makeClient(options);
  try {
    await client.send(new (sdk().CreateBucketCommand)({ Bucket: options.bucket }));
  } catch (error) {
    if (describeFailure(error).name !== 'BucketAlreadyOwnedByYou') {
      throw toStoreError('create bucket', { bucket: options.bucket, key: '' }, { error, attempts: 1 });
    }
  } finally {
    client.destroy();
  }
}

export class S3Store implements ObjectStore {
  readonly supports: StoreSupports;
  readonly bucket: string;
  readonly prefix: string;
  private readonly client: S3Client;
  private readonly partSize: number;
  private readonly partConcurrency: number;
  private readonly attemptTimeoutMs: number;
  private readonly retry: RetryPolicy;
  private readonly verifyReads: boolean;
  /** Set once the bucket is known to exist (HEAD answers 404 for a missing bucket too). */
  private bucketSeen = false;

  constructor(options: S3StoreOptions) {
    this.bucket = options.bucket;
    this.prefix = normalisePrefix(options.prefix ?? '');
    this.partSize = options.partSize ?? 16 * MiB;
    if (!Number.isSafeInteger(this.partSize) || this.partSize < MIN_PART_BYTES) {
      throw new ChunkvaultError('INVALID_ARGUMENT', `S3 part size must be at least 5 MiB: ${this.partSize}`, {
        details: { partSize: this.partSize },
      });
    }
    this.partConcurrency = Math.max(1, options.partConcurrency ?? 4);
    this.attemptTimeoutMs = options.attemptTimeoutMs ?? 120_000;
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
    this.client = makeClient(options);
    this.verifyReads = options.verifyReads ?? true;
    this.supports = { conditionalCreate: true, maxAtomicCreateBytes: this.partSize, verifiedReads: this.verifyReads, orderedList: true };
  }

  private objectKey(key: string): string {
    checkKey(key);
    return this.prefix + key;
  }

  /** One request, retried per policy, failures mapped to stable codes. */
  private call<T>(op: string, key: string, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
    return withRetry(
      () => run(AbortSignal.timeout(this.attemptTimeoutMs)),
      isRetryable,
      this.retry,
      (outcome) => toStoreError(op, { bucket: this.bucket, key }, outcome),
    );
  }

  async put(key: string, body: PutBody, options: PutOptions = {}): Promise<void> {
    const name = this.objectKey(key);
    const length = bodyLength(body);
    if (length <= this.partSize) {
      const data = isStreamBody(body) ? await firstPiece(body, key) : body;
      await this.putSingle(key, name, data, options);
      return;
    }
    if (options.ifNoneMatch === '*' && (await this.head(key)) !== undefined) throw alreadyExists(key);
    await this.putMultipart(key, name, body, length);
  }

  private async putSingle(key: string, name: string, data: Uint8Array, options: PutOptions): Promise<void> {
    const digest = md5(data);
    const result = await this.call('put', key, (abortSignal) =>
      this.client.send(
        new (sdk().PutObjectCommand)({
          Bucket: this.bucket,
          Key: name,
          Body: data,
          ContentLength: data.byteLength,
          ContentMD5: digest.toString('base64'),
          Metadata: { [PART_SIZE_META]: '0' },
          ...(options.ifNoneMatch === '*' ? { IfNoneMatch: '*' } : {}),
        }),
        { abortSignal },
      ),
    ).catch(async (err: unknown) => {
      // A conditional create retried after a lost answer meets its own object: it is
      // ours when the stored ETag is our body's MD5 (lease bodies carry a random token).
      const retried = err instanceof ChunkvaultError && err.code === 'OBJECT_EXISTS' && Number(err.details['attempts']) > 1;
      if (retried && (await this.etagOf(key, name)) === digest.toString('hex')) return { ETag: '' };
      throw err;
    });
    this.bucketSeen = true;
    const etag = unquote(result.ETag);
    if (etag !== '' && etag !== digest.toString('hex')) {
      await this.delete(key);
      throw corrupt(key, `the store answered ETag ${etag} for a body of MD5 ${digest.toString('hex')}`);
    }
  }

  private async putMultipart(key: string, name: string, body: PutBody, length: number): Promise<void> {
    if (Math.ceil(length / this.partSize) > MAX_PARTS) {
      throw new ChunkvaultError('INVALID_ARGUMENT', `${key}: ${length} bytes need more than ${MAX_PARTS} parts of ${this.partSize}`, {
        details: { key, length, partSize: this.partSize },
      });
    }
    const created = await this.call('start upload of', key, (abortSignal) =>
      this.client.send(
        new (sdk().CreateMultipartUploadCommand)({ Bucket: this.bucket, Key: name, Metadata: { [PART_SIZE_META]: String(this.partSize) } }),
        { abortSignal },
      ),
    );
    this.bucketSeen = true;
    const uploadId = created.UploadId ?? '';
    try {
      const digests = await this.uploadParts(key, name, uploadId, body);
      const all = createHash('md5');
      for (const d of digests) all.update(d);
      const expected = `${all.digest('hex')}-${digests.length}`;
      await this.complete(key, name, uploadId, digests, expected);
      await this.checkUploaded(key, name, length, expected);
    } catch (err) {
      await this.abortUpload(key, name, uploadId);
      throw err;
    }
  }

  /** Uploads every part with at most `partConcurrency` in flight; resolves to their MD5s in order. */
  private async uploadParts(key: string, name: string, uploadId: string, body: PutBody): Promise<Buffer[]> {
    const digests: Buffer[] = [];
    const inFlight = new Set<Promise<void>>();
    let failure: { error: unknown } | null = null;
    let partNumber = 0;
    try {
      for await (const piece of pieces(body, this.partSize, key)) {
        if (failure) break;
        const number = ++partNumber;
        const task = this.uploadPart(key, name, uploadId, number, piece).then(
          (digest) => {
            digests[number - 1] = digest;
          },
          (error: unknown) => {
            failure ??= { error };
          },
        );
        inFlight.add(task);
        void task.finally(() => inFlight.delete(task));
        if (inFlight.size >= this.partConcurrency) await Promise.race(inFlight);
      }
    } finally {
      // Also when the body stream failed: no part may still be running at abort time.
      await Promise.all(inFlight);
    }
    if (failure) throw (failure as { error: unknown }).error;
    return digests;
  }

  private async uploadPart(key: string, name: string, uploadId: string, partNumber: number, data: Uint8Array): Promise<Buffer> {
    const digest = md5(data);
    const result = await this.call(`upload part ${partNumber} of`, key, (abortSignal) =>
      this.client.send(
        new (sdk().UploadPartCommand)({
          Bucket: this.bucket,
          Key: name,
          UploadId: uploadId,
          PartNumber: partNumber,
          Body: data,
          ContentLength: data.byteLength,
          ContentMD5: digest.toString('base64'),
        }),
        { abortSignal },
      ),
    );
    const etag = unquote(result.ETag);
    if (etag !== digest.toString('hex')) throw corrupt(key, `part ${partNumber} came back with ETag ${etag}`);
    return digest;
  }

  private async complete(key: string, name: string, uploadId: string, digests: Buffer[], expected: string): Promise<void> {
    const parts = digests.map((d, i) => ({ PartNumber: i + 1, ETag: `"${d.toString('hex')}"` }));
    try {
      await this.call('complete upload of', key, (abortSignal) =>
        this.client.send(
          new (sdk().CompleteMultipartUploadCommand)({ Bucket: this.bucket, Key: name, UploadId: uploadId, MultipartUpload: { Parts: parts } }),
          { abortSignal },
        ),
      );
    } catch (err) {
      // A retried Complete whose first try succeeded (answer lost) finds no upload:
      // the object is there when its ETag is ours.
      const cause = err instanceof ChunkvaultError ? err.cause : err;
      if (describeFailure(cause).name !== 'NoSuchUpload' || (await this.etagOf(key, name)) !== expected) throw err;
    }
  }

  /** Reads the new object back: size and ETag must match what was sent. */
  private async checkUploaded(key: string, name: string, length: number, expected: string): Promise<void> {
    const head = await this.call('check', key, (abortSignal) =>
      this.client.send(new (sdk().HeadObjectCommand)({ Bucket: this.bucket, Key: name }), { abortSignal }),
    );
    const etag = unquote(head.ETag);
    if (head.ContentLength !== length || etag !== expected) {
      await this.delete(key);
      throw corrupt(key, `stored object has ${head.ContentLength} bytes, ETag ${etag}; sent ${length} bytes, ETag ${expected}`);
    }
  }

  private async etagOf(key: string, name: string): Promise<string | undefined> {
    try {
      const head = await this.call('check', key, (abortSignal) =>
        this.client.send(new (sdk().HeadObjectCommand)({ Bucket: this.bucket, Key: name }), { abortSignal }),
      );
      return unquote(head.ETag);
    } catch {
      return undefined;
    }
  }

  /** Best effort: an upload left behind is invisible, and `abortStaleUploads` can reap it. */
  private async abortUpload(key: string, name: string, uploadId: string): Promise<void> {
    try {
      await withRetry(
        () => this.client.send(new (sdk().AbortMultipartUploadCommand)({ Bucket: this.bucket, Key: name, UploadId: uploadId }), {
          abortSignal: AbortSignal.timeout(this.attemptTimeoutMs),
        }),
        isRetryable,
        { ...this.retry, attempts: 3, deadlineMs: 5_000 },
        (outcome) => toStoreError('abort upload of', { bucket: this.bucket, key }, outcome),
      );
    } catch {
      // nothing visible was written; the store keeps the parts until reaped
    }
  }

  async get(key: string): Promise<Uint8Array> {
    const name = this.objectKey(key);
    const { data, etag, partSize } = await this.call('get', key, async (abortSignal) => {
      const out = await this.client.send(new (sdk().GetObjectCommand)({ Bucket: this.bucket, Key: name }), { abortSignal });
      // The body is read inside the attempt: a reset mid-body is retried like any other.
      const bytes = out.Body ? await out.Body.transformToByteArray() : new Uint8Array(0);
      return { data: bytes, etag: unquote(out.ETag), partSize: out.Metadata?.[PART_SIZE_META] };
    });
    this.bucketSeen = true;
    if (this.verifyReads && partSize !== undefined) {
      const expected = expectedEtag(data, Number(partSize));
      if (etag !== expected) throw corrupt(key, `its bytes hash to ETag ${expected}, the store recorded ${etag}`);
    }
    return data;
  }

  async getRange(key: string, offset: number, length: number): Promise<Uint8Array> {
    checkRange(key, offset, length);
    const name = this.objectKey(key);
    if (length === 0) return new Uint8Array(0);
    let data: Uint8Array;
    try {
      data = await this.call('read range of', key, async (abortSignal) => {
        const range = `bytes=${offset}-${offset + length - 1}`;
        const out = await this.client.send(new (sdk().GetObjectCommand)({ Bucket: this.bucket, Key: name, Range: range }), { abortSignal });
        return out.Body ? await out.Body.transformToByteArray() : new Uint8Array(0);
      });
    } catch (err) {
      if (err instanceof ChunkvaultError && err.details['s3Code'] === 'InvalidRange') throw rangeBeyondEnd(key, offset, length, -1);
      throw err;
    }
    this.bucketSeen = true;
    // S3 clips a range that runs past the end.
    if (data.byteLength !== length) throw rangeBeyondEnd(key, offset, length, offset + data.byteLength);
    return data;
  }

  async head(key: string): Promise<number | undefined> {
    const name = this.objectKey(key);
    try {
      const out = await this.call('head', key, (abortSignal) =>
        this.client.send(new (sdk().HeadObjectCommand)({ Bucket: this.bucket, Key: name }), { abortSignal }),
      );
      this.bucketSeen = true;
      return out.ContentLength ?? 0;
    } catch (err) {
      if (!(err instanceof ChunkvaultError) || err.code !== 'OBJECT_NOT_FOUND') throw err;
      await this.checkBucket();
      return undefined;
    }
  }

  /** HEAD answers a bare 404 for a missing bucket as for a missing key: ask once. */
  private async checkBucket(): Promise<void> {
    if (this.bucketSeen) return;
    try {
      await this.call('find bucket', '', (abortSignal) => this.client.send(new (sdk().HeadBucketCommand)({ Bucket: this.bucket }), { abortSignal }));
    } catch (err) {
      if (err instanceof ChunkvaultError && err.code === 'OBJECT_NOT_FOUND') {
        throw new ChunkvaultError('BUCKET_NOT_FOUND', `bucket ${this.bucket} does not exist`, { cause: err, details: { bucket: this.bucket } });
      }
      throw err;
    }
    this.bucketSeen = true;
  }

  async delete(key: string): Promise<void> {
    const name = this.objectKey(key);
    await this.call('delete', key, (abortSignal) =>
      this.client.send(new (sdk().DeleteObjectCommand)({ Bucket: this.bucket, Key: name }), { abortSignal }),
    );
  }

  async *list(prefix: string, options: ListOptions = {}): AsyncGenerator<ObjectEntry, void, undefined> {
    const pageSize = Math.min(1000, Math.max(1, options.pageSize ?? 1000));
    let token: string | undefined;
    do {
      const page = await this.call('list', prefix, (abortSignal) =>
        this.client.send(
          new (sdk().ListObjectsV2Command)({ Bucket: this.bucket, Prefix: this.prefix + prefix, MaxKeys: pageSize, ContinuationToken: token }),
          { abortSignal },
        ),
      );
      this.bucketSeen = true;
      for (const item of page.Contents ?? []) {
        if (item.Key === undefined) continue;
        yield { key: item.Key.slice(this.prefix.length), size: item.Size ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  /**
   * Aborts multipart uploads under this store's prefix started more than `olderThanMs`
   * ago (left by writers that died, or whose abort failed); returns how many. Run it
   * where no upload can be that old, e.g. from GC.
   */
  async abortStaleUploads(olderThanMs = 24 * 3_600_000): Promise<number> {
    let aborted = 0;
    let keyMarker: string | undefined;
    let uploadMarker: string | undefined;
    do {
      const page = await this.call('list uploads under', this.prefix, (abortSignal) =>
        this.client.send(
          new (sdk().ListMultipartUploadsCommand)({ Bucket: this.bucket, Prefix: this.prefix, KeyMarker: keyMarker, UploadIdMarker: uploadMarker }),
          { abortSignal },
        ),
      );
      for (const upload of page.Uploads ?? []) {
        const started = upload.Initiated?.getTime() ?? Date.now();
        if (upload.Key === undefined || upload.UploadId === undefined || Date.now() - started < olderThanMs) continue;
        await this.abortUpload(upload.Key.slice(this.prefix.length), upload.Key, upload.UploadId);
        aborted++;
      }
      keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
      uploadMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
    } while (keyMarker !== undefined);
    return aborted;
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

function corrupt(key: string, why: string): ChunkvaultError {
  return new ChunkvaultError('OBJECT_CORRUPT', `object ${key} is corrupt: ${why}`, { details: { key } });
}

/** A stream body that fits in one piece, gathered into one buffer. */
async function firstPiece(body: PutBody, key: string): Promise<Uint8Array> {
  if (!isStreamBody(body)) return body;
  const out: Uint8Array[] = [];
  for await (const piece of fixedPieces(body, Math.max(1, body.length), key)) out.push(piece);
  return out[0] ?? new Uint8Array(0);
}

async function* pieces(body: PutBody, size: number, key: string): AsyncGenerator<Uint8Array, void, undefined> {
  if (isStreamBody(body)) {
    yield* fixedPieces(body, size, key);
    return;
  }
  for (let at = 0; at < body.byteLength; at += size) yield body.subarray(at, at + size);
}

