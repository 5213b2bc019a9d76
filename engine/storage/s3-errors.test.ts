import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ChunkvaultError } from '../errors.js';
import { withRetry } from './_retry.js';
import { isRetryable, toStoreError } from './_s3-errors.js';
import { expectedEtag } from './s3-store.js';

/** An error shaped like the SDK's: S3 code as name, HTTP status in $metadata. */
function s3Error(name: string, status?: number, code?: string): Error {
  const err = new Error(name) as Error & { $metadata: { httpStatusCode?: number }; code?: string };
  err.name = name;
  err.$metadata = status === undefined ? {} : { httpStatusCode: status };
  if (code !== undefined) err.code = code;
  return err;
}

const where = { bucket: 'b', key: 'k' };

describe('S3 error mapping', () => {
  it.each([
    ['InvalidAccessKeyId', 403, 'STORE_AUTH_FAILED'],
    ['SignatureDoesNotMatch', 403, 'STORE_AUTH_FAILED'],
    ['Unknown', 403, 'STORE_AUTH_FAILED'],
    ['QuotaExceeded', 403, 'STORE_FULL'],
    ['InsufficientStorage', 507, 'STORE_FULL'],
    ['NoSuchBucket', 404, 'BUCKET_NOT_FOUND'],
    ['NoSuchKey', 404, 'OBJECT_NOT_FOUND'],
    ['NotFound', 404, 'OBJECT_NOT_FOUND'],
    ['PreconditionFailed', 412, 'OBJECT_EXISTS'],
    ['SlowDown', 503, 'STORE_UNAVAILABLE'],
    ['InternalError', 500, 'STORE_UNAVAILABLE'],
    ['TimeoutError', undefined, 'TIMEOUT'],
    ['BadDigest', 400, 'OBJECT_CORRUPT'],
    ['InvalidArgument', 400, 'REMOTE_ERROR'],
  ] as const)('%s (%s) -> %s', (name, status, code) => {
    const mapped = toStoreError('get', where, { error: s3Error(name, status), attempts: 3 });
    expect(mapped.code).toBe(code);
    expect(mapped.details).toMatchObject({ op: 'get', bucket: 'b', key: 'k', s3Code: name, attempts: 3 });
    expect(mapped.cause).toBeInstanceOf(Error);
  });

  it('maps network resets to STORE_UNAVAILABLE and retries them', () => {
    const reset = s3Error('Error', undefined, 'ECONNRESET');
    expect(isRetryable(reset)).toBe(true);
    expect(toStoreError('put', where, { error: reset, attempts: 5 }).code).toBe('STORE_UNAVAILABLE');
    expect(isRetryable(s3Error('Error', undefined, 'ECONNREFUSED'))).toBe(true);
  });

  it('retries throttling and 5xx, never client errors, quota or typed errors', () => {
    expect(isRetryable(s3Error('SlowDown', 503))).toBe(true);
    expect(isRetryable(s3Error('Whatever', 502))).toBe(true);
    expect(isRetryable(s3Error('InsufficientStorage', 507))).toBe(false);
    expect(isRetryable(s3Error('NoSuchKey', 404))).toBe(false);
    expect(isRetryable(s3Error('SignatureDoesNotMatch', 403))).toBe(false);
    expect(isRetryable(new ChunkvaultError('OBJECT_CORRUPT', 'x'))).toBe(false);
  });
});

describe('withRetry', () => {
  const policy = { attempts: 4, baseDelayMs: 1, maxDelayMs: 2, deadlineMs: 10_000 };
  const fail = ({ attempts }: { attempts: number }): Error => new ChunkvaultError('STORE_UNAVAILABLE', `after ${attempts}`, { details: { attempts } });

  it('succeeds after transient failures', async () => {
    let calls = 0;
    const out = await withRetry(async () => (++calls < 3 ? Promise.reject(s3Error('SlowDown', 503)) : 'ok'), isRetryable, policy, fail);
    expect(out).toBe('ok');
    expect(calls).toBe(3);
  });

  it('stops at the attempt limit and at the first final error', async () => {
    let calls = 0;
    await expect(withRetry(async () => {
      calls++;
      throw s3Error('SlowDown', 503);
    }, isRetryable, policy, fail)).rejects.toThrow('after 4');
    expect(calls).toBe(4);
    calls = 0;
    await expect(withRetry(async () => {
      calls++;
      throw s3Error('NoSuchKey', 404);
    }, isRetryable, policy, fail)).rejects.toThrow('after 1');
    expect(calls).toBe(1);
  });

  it('stops when the time budget is spent', async () => {
    let calls = 0;
    const slow = { attempts: 100, baseDelayMs: 50, maxDelayMs: 50, deadlineMs: 120 };
    await expect(withRetry(async () => {
      calls++;
      throw s3Error('SlowDown', 503);
    }, isRetryable, slow, fail)).rejects.toThrow();
    expect(calls).toBeLessThan(10);
  });
});

describe('expectedEtag', () => {
  it('is the MD5 for one PUT and the MD5 of part MD5s with a count for multipart', () => {
    const data = Buffer.alloc(12, 7);
    expect(expectedEtag(data, 0)).toBe(createHash('md5').update(data).digest('hex'));
    const parts = [data.subarray(0, 5), data.subarray(5, 10), data.subarray(10)].map((p) => createHash('md5').update(p).digest());
    expect(expectedEtag(data, 5)).toBe(`${createHash('md5').update(Buffer.concat(parts)).digest('hex')}-3`);
    expect(expectedEtag(data, 12)).toBe(createHash('md5').update(data).digest('hex'));
  });
});
