/**
 * What an S3 failure means to us: whether to retry it, and which stable error code it
 * becomes. The SDK reports the S3 error code as `name` (`NoSuchKey`, `SlowDown`, ...)
 * and the HTTP status in `$metadata.httpStatusCode`; a HEAD answer has no body, so it
 * carries only the status (`NotFound`, or `Unknown` with 403).
 */
import { ChunkvaultError, type ErrorCode, type ErrorDetails } from '../errors.js';
import type { RetryOutcome } from './_retry.js';

export interface S3Failure {
  /** S3 error code or node error name. */
  readonly name: string;
  readonly status: number | null;
  /** errno-style code of a network error (`ECONNRESET`), else null. */
  readonly syscallCode: string | null;
}

export function describeFailure(error: unknown): S3Failure {
  const e = error as { name?: unknown; code?: unknown; $metadata?: { httpStatusCode?: unknown }; cause?: unknown } | null;
  const name = typeof e?.name === 'string' ? e.name : 'Error';
  const status = typeof e?.$metadata?.httpStatusCode === 'number' ? e.$metadata.httpStatusCode : null;
  let syscallCode = typeof e?.code === 'string' ? e.code : null;
  if (syscallCode === null && e?.cause && typeof (e.cause as { code?: unknown }).code === 'string') {
    syscallCode = (e.cause as { code: string }).code;
  }
  return { name, status, syscallCode };
}

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'ERR_STREAM_PREMATURE_CLOSE',
  'UND_ERR_SOCKET',
]);
const RETRYABLE_NAMES = new Set([
  'SlowDown',
  'ServiceUnavailable',
  'InternalError',
  'RequestTimeout',
  'RequestTimeoutException',
  'TimeoutError',
  'AbortError',
  // The body was damaged on the way: sending it again is the cure.
  'BadDigest',
  'XAmzContentSHA256Mismatch',
]);
const AUTH_NAMES = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'InvalidToken', 'ExpiredToken']);
const FULL_NAMES = new Set(['QuotaExceeded', 'InsufficientStorage', 'EntityTooLarge']);

function isNetwork(f: S3Failure): boolean {
  return (f.syscallCode !== null && NETWORK_CODES.has(f.syscallCode)) || /socket hang up/i.test(f.name);
}

function isTimeout(f: S3Failure): boolean {
  return f.name === 'TimeoutError' || f.name === 'AbortError' || f.name === 'RequestTimeout' || f.syscallCode === 'ETIMEDOUT';
}

/** Throttling, server errors, timeouts and network resets are retried; all else is final. */
export function isRetryable(error: unknown): boolean {
  if (error instanceof ChunkvaultError) return false;
  const f = describeFailure(error);
  if (f.status === 507) return false;
  return RETRYABLE_NAMES.has(f.name) || isNetwork(f) || (f.status !== null && f.status >= 500);
}

function codeFor(f: S3Failure): ErrorCode {
  // Names first: radosgw answers QuotaExceeded with 403, like a refused signature.
  if (FULL_NAMES.has(f.name) || f.status === 507) return 'STORE_FULL';
  if (AUTH_NAMES.has(f.name) || f.status === 403) return 'STORE_AUTH_FAILED';
  if (f.name === 'NoSuchBucket') return 'BUCKET_NOT_FOUND';
  if (f.name === 'NoSuchKey' || f.name === 'NotFound' || f.status === 404) return 'OBJECT_NOT_FOUND';
  if (f.name === 'PreconditionFailed' || f.status === 412) return 'OBJECT_EXISTS';
  if (f.name === 'BadDigest' || f.name === 'XAmzContentSHA256Mismatch') return 'OBJECT_CORRUPT';
  if (isTimeout(f)) return 'TIMEOUT';
  if (isNetwork(f) || (f.status !== null && f.status >= 500)) return 'STORE_UNAVAILABLE';
  return 'REMOTE_ERROR';
}

const PHRASES: Partial<Record<ErrorCode, string>> = {
  STORE_AUTH_FAILED: 'the object store refused the credentials',
  BUCKET_NOT_FOUND: 'the bucket does not exist',
  OBJECT_NOT_FOUND: 'no such object',
  OBJECT_EXISTS: 'the object already exists',
  STORE_FULL: 'the object store is full (quota exceeded)',
  OBJECT_CORRUPT: 'the body failed its checksum on the way',
  TIMEOUT: 'the object store did not answer in time',
  STORE_UNAVAILABLE: 'the object store is unavailable',
};

/** The ChunkvaultError for a failed S3 call `op` on `key`, after `attempts` attempts. */
export function toStoreError(op: string, where: { bucket: string; key: string }, outcome: RetryOutcome): ChunkvaultError {
  const { error, attempts } = outcome;
  if (error instanceof ChunkvaultError) return error;
  const f = describeFailure(error);
  const code = codeFor(f);
  const details: ErrorDetails = { op, bucket: where.bucket, key: where.key, s3Code: f.name, status: f.status, attempts };
  if (f.syscallCode !== null) details['errno'] = f.syscallCode;
  const reason = PHRASES[code] ?? `S3 error ${f.name}${f.status === null ? '' : ` (${f.status})`}`;
  const tries = attempts > 1 ? ` after ${attempts} attempts` : '';
  return new ChunkvaultError(code, `unable to ${op} ${where.bucket}/${where.key}: ${reason}${tries}`, { cause: error, details });
}
