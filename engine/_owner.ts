/**
 * Ownership of temporary files: every temporary file a process makes in a repository
 * starts with its owner tag `<pid>-<kernel start time>.`, so a leftover can be told
 * from a file a live writer is still using without any registry or timing rule: a
 * file is removed only when the process that made it is gone (a dead process makes
 * no more files, and a reused pid has another start time).
 */
import { readFileSync, promises as fsp } from 'node:fs';
import { join } from 'node:path';

/** Kernel start time (clock ticks since boot) of `pid` from /proc/<pid>/stat. */
export function parseProcStart(stat: string): string {
  // Field 22; the command name (field 2) may hold spaces and parentheses.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
}

/** Kernel start time of `pid`, or undefined when there is no such process. */
export async function procStartOf(pid: number | string): Promise<string | undefined> {
  try {
    return parseProcStart(await fsp.readFile(`/proc/${pid}/stat`, 'latin1'));
  } catch {
    return undefined;
  }
}

function ownStart(): string {
  try {
    return parseProcStart(readFileSync('/proc/self/stat', 'latin1'));
  } catch {
    return '';
  }
}

/** This process's kernel start time ('' where /proc is unavailable). */
export const OWN_START = ownStart();

/** This process's tag. */
export const OWNER_TAG = `${process.pid}-${OWN_START || '0'}`;

/** `dir/<owner tag>.<name>`: the path of a temporary file this process owns. */
export function ownedTmp(dir: string, name: string): string {
  return join(dir, `${OWNER_TAG}.${name}`);
}

/**
 * Whether the file name's owner is alive: true (keep), false (owner gone), or
 * undefined when the name carries no tag (a file of an older program version).
 */
export async function ownerAlive(fileName: string): Promise<boolean | undefined> {
  const m = /^(\d+)-(\d+)\./.exec(fileName);
  if (!m) return undefined;
  return (await procStartOf(m[1]!)) === m[2];
}
