/**
 * File-system primitives for crash-safe publication (FORMAT.md "Commit order"):
 * write a temporary file, fsync it, rename it into place, fsync the directory.
 */
import { constants, promises as fsp } from 'node:fs';
import { dirname } from 'node:path';

/** fsyncs a directory so that a rename inside it survives a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes `data` to `tmpPath`, fsyncs, renames to `finalPath`, fsyncs the target directory. */
export async function writeFileAtomic(tmpPath: string, finalPath: string, data: Uint8Array | string): Promise<void> {
  const fh = await fsp.open(tmpPath, 'w', 0o644);
  try {
    await fh.writeFile(data);
    await fh.datasync();
  } finally {
    await fh.close();
  }
  await publish(tmpPath, finalPath);
}

/** Renames an already-synced file into place and makes the rename durable. */
export async function publish(tmpPath: string, finalPath: string): Promise<void> {
  await fsp.mkdir(dirname(finalPath), { recursive: true });
  await fsp.rename(tmpPath, finalPath);
  await fsyncDir(dirname(finalPath));
}

export async function exists(path: string): Promise<boolean> {
  try {
    await fsp.access(path);
    return true;
  } catch {
    return false;
  }
}

/** Reads exactly `length` bytes at `position`, or fewer only at end of file. Returns the count. */
export async function readFull(fh: fsp.FileHandle, target: Uint8Array, position: number): Promise<number> {
  let done = 0;
  while (done < target.length) {
    const { bytesRead } = await fh.read(target, done, target.length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** Writes all of `data` at `position`. */
export async function writeFull(fh: fsp.FileHandle, data: Uint8Array, position: number | null): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const pos = position === null ? null : position + done;
    const { bytesWritten } = await fh.write(data, done, data.length - done, pos);
    done += bytesWritten;
  }
}
