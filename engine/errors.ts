/**
 * Typed errors with stable codes. Callers branch on `code`, never on the message.
 * Each code maps to one process exit code (see README "Exit codes and error codes").
 * Layers add context by wrapping with `{ cause }`, not by editing messages.
 */

/** Every stable error code, with the exit status the CLI uses for it. */
export const ERROR_CODES = {
  USAGE: 2,
  INVALID_ARGUMENT: 2,
  REPO_NOT_FOUND: 3,
  REPO_EXISTS: 3,
  REPO_CONFIG_INVALID: 4,
  REPO_VERSION_UNSUPPORTED: 4,
  REPO_LOCKED: 5,
  GC_RUNNING: 5,
  REPO_BUSY: 5,
  SOURCE_NOT_FOUND: 3,
  SOURCE_READ_FAILED: 6,
  SOURCE_TRUNCATED: 6,
  EXTENTS_INVALID: 2,
  NO_PARENT: 3,
  POINT_NOT_FOUND: 3,
  POINT_AMBIGUOUS: 2,
  MAP_CORRUPT: 4,
  CONTAINER_CORRUPT: 4,
  CHUNK_MISSING: 4,
  CHUNK_CORRUPT: 4,
  HASH_MISMATCH: 4,
  INDEX_CORRUPT: 4,
  VERIFY_FAILED: 4,
  IO_ERROR: 7,
  OUTPUT_FAILED: 7,
  STORE_FULL: 7,
  STORE_UNAVAILABLE: 6,
  STORE_AUTH_FAILED: 6,
  BUCKET_NOT_FOUND: 3,
  OBJECT_NOT_FOUND: 3,
  OBJECT_EXISTS: 3,
  OBJECT_CORRUPT: 4,
  TIMEOUT: 6,
  CONNECT_FAILED: 6,
  PROTOCOL_ERROR: 6,
  TLS_FAILED: 6,
  REMOTE_ERROR: 6,
  AUTH_REQUIRED: 8,
  AUTH_FAILED: 8,
  FORBIDDEN: 8,
  SESSION_NOT_FOUND: 3,
  NOT_FOUND: 3,
  TOO_MANY_SESSIONS: 5,
  BODY_TOO_LARGE: 2,
  INTERRUPTED: 130,
  INTERNAL: 1,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** Extra machine-readable facts about an error (offsets, paths, digests). */
export type ErrorDetails = Record<string, string | number | boolean | null | string[]>;

export class ChunkvaultError extends Error {
  override readonly name = 'ChunkvaultError';
  readonly code: ErrorCode;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; details?: ErrorDetails } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
  }

  /** The process exit status for this error. */
  get exitCode(): number {
    return ERROR_CODES[this.code];
  }

  toJSON(): { code: ErrorCode; message: string; details: ErrorDetails } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

/** True when `err` is a ChunkvaultError, optionally with the given code. */
export function isChunkvaultError(err: unknown, code?: ErrorCode): err is ChunkvaultError {
  return err instanceof ChunkvaultError && (code === undefined || err.code === code);
}

/**
 * Wraps any thrown value: ChunkvaultErrors pass through unchanged, node system errors
 * become IO_ERROR with their errno code in `details.errno`, anything else INTERNAL.
 */
export function toChunkvaultError(err: unknown, context: string): ChunkvaultError {
  if (err instanceof ChunkvaultError) return err;
  const sys = err as NodeJS.ErrnoException;
  if (sys && typeof sys.code === 'string' && typeof sys.syscall === 'string') {
    return new ChunkvaultError('IO_ERROR', `${context}: ${sys.message}`, {
      cause: err,
      details: { errno: sys.code, path: sys.path ?? null },
    });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new ChunkvaultError('INTERNAL', `${context}: ${message}`, { cause: err });
}
