/**
 * Retries with exponential backoff and full jitter: attempt n (from 0) waits a random
 * time in [0, min(maxDelayMs, baseDelayMs x 2^n)), so clients that failed together do
 * not come back together. A time budget (`deadlineMs`) bounds the whole operation, so
 * a gateway restart of a few seconds is ridden out while a dead one fails in bounded
 * time.
 */

export interface RetryPolicy {
  /** Attempts in all, the first included (>= 1). */
  readonly attempts: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** No new attempt starts once this much time has passed since the first. */
  readonly deadlineMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 10, baseDelayMs: 100, maxDelayMs: 5_000, deadlineMs: 60_000 };

/** What the last attempt failed with, and how many attempts were made. */
export interface RetryOutcome {
  readonly error: unknown;
  readonly attempts: number;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs `op` until it succeeds, `retryable(error)` says no, or the policy is spent; then
 * rejects with `fail({ error, attempts })`.
 */
export async function withRetry<T>(
  op: (attempt: number) => Promise<T>,
  retryable: (error: unknown) => boolean,
  policy: RetryPolicy,
  fail: (outcome: RetryOutcome) => Error,
): Promise<T> {
  const start = Date.now();
  for (let attempt = 0; ; attempt++) {
    try {
      return await op(attempt);
    } catch (error) {
      const delay = Math.random() * Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** attempt);
      const spent = attempt + 1 >= policy.attempts || Date.now() - start + delay > policy.deadlineMs;
      if (spent || !retryable(error)) throw fail({ error, attempts: attempt + 1 });
      await sleep(delay);
    }
  }
}
