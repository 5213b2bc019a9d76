import { describe, expect, it } from 'vitest';
import type { PointRecord } from '../../engine/index.js';
import { decide, isOurs, newBitmapName, removeOnCommit, restoreOnFailure, type BitmapView } from './bitmaps.js';

function parent(changeToken: string | null): PointRecord {
  return {
    id: 'p1', vm: 'vm', disk: 'd', time: '2026-01-01T00:00:00.000Z', parent: null, mode: 'full', sizeBytes: 1, chunkSize: 1, slotCount: 1,
    mapDigest: '', changeToken, source: 'kvm:/x', stats: { bytesRead: 0, bytesNew: 0, rawNew: 0, chunksRead: 0, chunksZero: 0, chunksNew: 0, chunksDedup: 0, durationMs: 0 },
  };
}

const ok = (name: string): BitmapView => ({ name, inconsistent: false, enabled: true });
const bad = (name: string): BitmapView => ({ name, inconsistent: true, enabled: true });
const off = (name: string): BitmapView => ({ name, inconsistent: false, enabled: false });

describe('bitmap names', () => {
  it('are ours, unique and valid qcow2 bitmap names', () => {
    const a = newBitmapName(new Date('2026-11-24T21:00:05.123Z'));
    expect(a).toMatch(/^cv-20261124T210005Z-[0-9a-f]{4}$/);
    expect(isOurs(a)).toBe(true);
    expect(isOurs('bk1')).toBe(false);
    const many = new Set(Array.from({ length: 50 }, () => newBitmapName()));
    expect(many.size).toBeGreaterThan(45); // 16 random bits per second
  });
});

describe('decide', () => {
  it('reads everything for the first backup and drops stale bitmaps of ours only on commit', () => {
    const d = decide(null, false, [ok('cv-stale'), ok('user-bitmap')]);
    expect(d).toEqual({ kind: 'full', reason: 'first backup of this disk', old: null, stale: ['cv-stale'] });
    expect(removeOnCommit(d)).toEqual(['cv-stale']);
    expect(restoreOnFailure(d)).toBeNull();
  });

  it('is incremental from the parent bitmap, absorbing leftovers of ours', () => {
    const d = decide(parent('cv-a'), false, [ok('cv-a'), ok('cv-left'), ok('other')]);
    expect(d).toEqual({ kind: 'incremental', old: 'cv-a', absorb: ['cv-left'] });
    expect(removeOnCommit(d)).toEqual(['cv-a']);
    expect(restoreOnFailure(d)).toBe('cv-a');
  });

  it('honours --full but keeps a usable parent bitmap until the full backup commits', () => {
    const d = decide(parent('cv-a'), true, [ok('cv-a')]);
    expect(d).toEqual({ kind: 'full', reason: 'full backup requested', old: 'cv-a', stale: [] });
    expect(restoreOnFailure(d)).toBe('cv-a');
    expect(removeOnCommit(d)).toEqual(['cv-a']);
  });

  it('falls back to a full read, saying why, when the bitmap cannot be trusted', () => {
    expect(decide(parent('cv-a'), false, [ok('cv-b')])).toMatchObject({ kind: 'full', reason: 'bitmap cv-a of the parent point is not in the image', old: null, stale: ['cv-b'] });
    expect(decide(parent('cv-a'), false, [bad('cv-a')])).toMatchObject({ kind: 'full', reason: expect.stringMatching(/inconsistent/), old: null, stale: ['cv-a'] });
    expect(decide(parent('cv-a'), false, [ok('cv-a'), bad('cv-left')])).toMatchObject({ kind: 'full', reason: expect.stringMatching(/leftover bitmap cv-left/), old: 'cv-a' });
    // A parent from another front-end (a user's bitmap, or none): never touch that bitmap.
    expect(decide(parent('bk1'), false, [ok('bk1')])).toMatchObject({ kind: 'full', old: null, stale: [] });
    expect(decide(parent(null), false, [])).toMatchObject({ kind: 'full', reason: 'the parent point p1 has no chunkvault bitmap' });
    // Disabled with nothing to absorb: writes since it was disabled are unknown.
    expect(decide(parent('cv-a'), false, [off('cv-a')])).toMatchObject({ kind: 'full', reason: expect.stringMatching(/disabled/), old: 'cv-a' });
  });

  it('continues from a disabled parent bitmap when a killed run left the bitmap that took over', () => {
    expect(decide(parent('cv-a'), false, [off('cv-a'), ok('cv-b')])).toEqual({ kind: 'incremental', old: 'cv-a', absorb: ['cv-b'] });
  });
});
