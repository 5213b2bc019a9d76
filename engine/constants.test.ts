import { describe, expect, it } from 'vitest';
import * as C from './constants.js';
import { ERROR_CODES } from './errors.js';

// Pins every on-disk constant of format v1: a change here is a new format version.
describe('format v1 constants', () => {
  it('keeps magic values', () => {
    expect(Buffer.from(C.CONTAINER_MAGIC).toString('latin1')).toBe('CVCTR\0\0\x01');
    expect(Buffer.from(C.RECORD_MAGIC).toString('latin1')).toBe('CVR1');
    expect(Buffer.from(C.TRAILER_MAGIC).toString('latin1')).toBe('CVFTR\0\0\x01');
    expect(Buffer.from(C.MAP_MAGIC).toString('latin1')).toBe('CVMAP\0\0\x01');
  });

  it('keeps header sizes and limits', () => {
    expect(C.FORMAT_VERSION).toBe(2);
    expect(C.CONTAINER_HEADER_BYTES).toBe(32);
    expect(C.RECORD_HEADER_BYTES).toBe(64);
    expect(C.FOOTER_ENTRY_BYTES).toBe(64);
    expect(C.TRAILER_BYTES).toBe(32);
    expect(C.MAP_HEADER_BYTES).toBe(64);
    expect(C.MAP_TRAILER_BYTES).toBe(32);
    expect(C.INDEX_VALUE_BYTES).toBe(45);
    expect(C.CONTAINER_ID_BYTES).toBe(16);
    expect(C.DIGEST_BYTES).toBe(32);
    expect(C.MIN_CHUNK_SIZE).toBe(65536);
    expect(C.MAX_CHUNK_SIZE).toBe(4194304);
    expect(C.MAX_RECORDS_PER_CONTAINER).toBe(65536);
    expect(C.CODEC_IDS).toEqual({ none: 0, lz4: 1, zstd: 2 });
  });

  it('keeps error codes and their exit statuses', () => {
    expect(ERROR_CODES.USAGE).toBe(2);
    expect(ERROR_CODES.REPO_VERSION_UNSUPPORTED).toBe(4);
    expect(ERROR_CODES.CHUNK_CORRUPT).toBe(4);
    expect(ERROR_CODES.INTERRUPTED).toBe(130);
  });
});
