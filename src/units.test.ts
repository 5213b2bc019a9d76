import { describe, expect, it } from 'vitest';
import { formatBytes, formatDuration, parseSize } from './units.js';

describe('units', () => {
  it.each([
    ['64K', 65536],
    ['1M', 1048576],
    ['1MiB', 1048576],
    ['4m', 4194304],
    ['65536', 65536],
    ['2G', 2 ** 31],
  ])('parses %s', (text, n) => expect(parseSize(text)).toBe(n));

  it.each(['', 'abc', '1.5M', '-1', '1X'])('rejects %s', (text) => expect(() => parseSize(text)).toThrow(/invalid size/));

  it('formats', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1536)).toBe('1.50 KiB');
    expect(formatBytes(256 * 1024 * 1024)).toBe('256 MiB');
    expect(formatDuration(61_000)).toBe('01:01');
    expect(formatDuration(3_661_000)).toBe('1:01:01');
  });
});
