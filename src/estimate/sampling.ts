/**
 * Sampling for `estimate --sample`: which read regions to read (a seeded uniform
 * Bernoulli sample, reproducible with `--seed`), and the ratio estimator with its 95 %
 * confidence interval (normal approximation with the finite-population correction).
 *
 * For a quantity x (zero bytes, unique bytes, stored bytes) measured on each sampled
 * region i of length l_i, the total is estimated as X = L * sum(x) / sum(l), where L is
 * the total logical size; its standard error is
 * N * sqrt((1 - n/N) / n * var(x_i - r * l_i)), with r = sum(x) / sum(l).
 *
 * Caveat: a chunk counts as a duplicate only when its twin was also sampled, so for
 * data that repeats across distant regions the sampled unique bytes are biased upward
 * (the dedup ratio downward). Zero share and compression are unbiased.
 */
import { ChunkvaultError } from '../../engine/index.js';

/** mulberry32: a small seeded PRNG in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Which of `count` regions to read: each with probability `percent` / 100, at least one. */
export function chooseRegions(count: number, percent: number, rnd: () => number): boolean[] {
  if (!(percent > 0 && percent <= 100)) throw new ChunkvaultError('INVALID_ARGUMENT', `--sample ${percent}: use a percentage in (0, 100]`);
  const chosen = Array.from({ length: count }, () => rnd() < percent / 100);
  if (count > 0 && !chosen.includes(true)) chosen[Math.floor(rnd() * count)] = true;
  return chosen;
}

export interface Interval {
  readonly estimate: number;
  readonly low: number;
  readonly high: number;
}

/** Ratio estimate of a total with its 95 % interval; `lengths` are the regions' bytes. */
export function estimateTotal(values: readonly number[], lengths: readonly number[], totalLength: number, populationRegions: number): Interval {
  const n = values.length;
  const sumX = values.reduce((a, b) => a + b, 0);
  const sumL = lengths.reduce((a, b) => a + b, 0);
  if (n === 0 || sumL === 0) return { estimate: 0, low: 0, high: 0 };
  const r = sumX / sumL;
  const estimate = r * totalLength;
  if (n < 2 || n >= populationRegions) return { estimate, low: estimate, high: estimate };
  const resid = values.map((x, i) => x - r * lengths[i]!);
  const variance = resid.reduce((a, d) => a + d * d, 0) / (n - 1);
  const meanL = totalLength / populationRegions;
  // Standard error of the ratio estimate, scaled from a mean per region to the total.
  const se = (populationRegions * Math.sqrt(((1 - n / populationRegions) / n) * variance) * meanL) / (sumL / n);
  return { estimate, low: Math.max(0, estimate - 1.96 * se), high: Math.min(totalLength, estimate + 1.96 * se) };
}
