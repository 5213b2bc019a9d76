/**
 * The `chunkvault` command's program (loaded by main.ts). Command names and flags are a
 * contract (scripts call them); exit codes and error codes are listed in the README.
 */
import { Command, CommanderError, Option } from 'commander';
import { ChunkvaultError } from '../../engine/index.js';
import { parseSize } from '../units.js';
import { cmdBackup, cmdIndexRebuild, cmdInit, cmdPoints, cmdRestore, cmdStats, cmdVerify } from './commands.js';
import { printJson, reportError } from './output.js';
import { cmdEstimate, DEFAULT_ESTIMATE_CHUNK_SIZES, DEFAULT_ESTIMATE_CODECS } from './estimate-command.js';
import { registerServeCommand } from './serve-command.js';
import { registerTokenCommands } from './token-command.js';
import { addForgetCommand } from './forget-command.js';
import { cmdReport } from './report-command.js';
import { cacheOption, endpointOption, objectStoreOptions } from './object-store-options.js';
import { addGcCommand } from './gc-command.js';
import { SOURCES_HELP } from './sources-help.js';

const repoOption = () => new Option('--repo <repo>', 'repository: a directory, s3://bucket[/prefix], or a media agent http(s)://... (default: $CHUNKVAULT_REPO)');
const jsonOption = () => new Option('--json', 'print machine-readable JSON on stdout');

function action<A extends unknown[]>(fn: (...args: A) => Promise<number>) {
  return async (...args: A) => {
    objectStoreOptions(args);
    process.exitCode = await fn(...args);
  };
}

function buildProgram(): Command {
  const program = new Command('chunkvault')
    .description('Block-level deduplicating backups of virtual-machine disks: every point a full image.')
    .version('0.1.0')
    .showHelpAfterError()
    .configureOutput({ outputError: (text, write) => write(`chunkvault: USAGE: ${text.replace(/^error: /, '')}`) })
    .exitOverride();
  program
    .command('init <repo>')
    .description('create a repository: a directory, or s3://bucket[/prefix] on S3-compatible object storage')
    .addOption(endpointOption())
    .addOption(cacheOption())
    .option('--chunk-size <size>', 'chunk size, a power of two from 64K to 4M (default 256K)')
    .option('--compression <codec>', 'lz4[:ACCEL] | zstd[:LEVEL] | none (default lz4, acceleration 4, the fastest; lz4:1 stores about 7 % less, zstd:1 about 25 % less; "zstd" alone means level 3)')
    .addOption(jsonOption())
    .action(action(cmdInit));
  program
    .command('backup <source...>')
    .summary('back up a disk, or every disk of a VM, as a new restore point')
    .description('back up a disk, or every disk of a VM, as a new restore point (sources below)')
    .addHelpText('after', SOURCES_HELP)
    .addOption(repoOption()).addOption(endpointOption()).addOption(cacheOption())
    .option('--vm <vm>', 'VM name (required, except for vmware://, hyperv:// and xen:// sources: default the VM named in the URI)')
    .option('--disk <disk>', "disk name (default: the source's base name)")
    .option('--changed-extents <file>', 'JSON [{"offset":N,"length":N}]: read only these, on top of the latest point')
    .option('--bitmap <name>', 'NBD: read only the extents dirty in qemu:dirty-bitmap:<name>, on top of the latest point')
    .option('--full', 'read the whole source even when --changed-extents or --bitmap is given')
    .addOption(jsonOption())
    .action(action(cmdBackup));
  program
    .command('points')
    .description('list committed restore points')
    .addOption(repoOption()).addOption(endpointOption()).addOption(cacheOption())
    .option('--vm <vm>', 'only this VM')
    .option('--disk <disk>', 'only this disk')
    .addOption(jsonOption())
    .action(action(cmdPoints));
  program
    .command('restore <point>')
    .description('write a point as a full disk image (point: id, unique prefix, or "latest"), or every disk of a VM backup (its job id) into a directory')
    .addOption(repoOption()).addOption(endpointOption()).addOption(cacheOption())
    .option('--vm <vm>', 'resolve the point among this VM')
    .option('--disk <disk>', 'resolve the point among this disk')
    .requiredOption('--output <path>', 'file, block device, FIFO, or - for stdout; a directory for a VM backup')
    .option('--verify-digest', 'also check SHA-256 of every chunk (the check hash is always checked)')
    .option('--buffered', 'write files and block devices through the page cache (default: direct I/O where the filesystem allows it)')
    .addOption(jsonOption())
    .action(action(cmdRestore));
  program
    .command('verify [point]')
    .description('check the repository (or one point); exits non-zero on any problem')
    .addOption(repoOption()).addOption(endpointOption()).addOption(cacheOption())
    .option('--read-data', 're-read and re-hash every stored chunk')
    .addOption(jsonOption())
    .action(action(cmdVerify));
  program.command('stats').description('space usage, dedup and compression ratios, per point').addOption(repoOption()).addOption(endpointOption()).addOption(cacheOption()).addOption(jsonOption()).action(action(cmdStats));
  addForgetCommand(program);
  addGcCommand(program, action as never);
  program
    .command('report')
    .description('write a self-contained HTML dedup analysis (charts of size, ratios and space per VM over time; no network, no script)')
    .addOption(repoOption()).addOption(endpointOption()).addOption(cacheOption())
    .option('--html <file>', 'the HTML file to write (replaced atomically)')
    .addOption(jsonOption())
    .action(action(cmdReport));
  program
    .command('estimate <source...>')
    .summary('estimate dedup, compression and repository size per chunk size and codec, without writing a repository')
    .description('estimate dedup, compression and repository size per chunk size and codec, without writing a repository (sources below)')
    .addHelpText('after', SOURCES_HELP)
    .option('--chunk-sizes <list>', `fixed chunk sizes (and CDC averages with --cdc), powers of two from 64K to 4M`, DEFAULT_ESTIMATE_CHUNK_SIZES)
    .option('--codecs <list>', 'codecs to measure: zstd[:LEVEL], lz4[:ACCEL], none', DEFAULT_ESTIMATE_CODECS)
    .option('--cdc', 'also estimate content-defined chunking (FastCDC-style, averages = the chunk sizes)')
    .option('--sample <percent>', 'read a seeded random sample of this percentage of the data; prints 95% intervals')
    .option('--seed <n>', 'seed of --sample', '1')
    .option('--threads <n>', 'worker threads (default: available cores)')
    .addOption(jsonOption())
    .action(action(cmdEstimate));
  registerServeCommand(program, action);
  registerTokenCommands(program, action);
  const index = program.command('index').description('chunk index maintenance');
  index.command('rebuild').description('rebuild the index from the container footers').addOption(repoOption()).addOption(endpointOption()).addOption(cacheOption()).addOption(jsonOption()).action(action(cmdIndexRebuild));
  program
    .command('demo')
    .description('run the embedded default: sample disk, full + incremental backups, checked restores, stats')
    .option('--dir <dir>', 'working directory', 'chunkvault-demo')
    .option('--size <size>', 'sample disk size', '256M')
    .option('--incrementals <n>', 'number of incremental backups', '4')
    .action(
      action(async (o: { dir: string; size: string; incrementals: string }) => {
        // Loaded on use: the demo pulls in the sample-disk generator and the HTML report.
        const { runDemo } = await import('../demo.js');
        const ok = await runDemo({ dir: o.dir, sizeBytes: parseSize(o.size) + 12345, incrementals: Number(o.incrementals), log: (l) => console.log(l) });
        if (!ok) throw new ChunkvaultError('VERIFY_FAILED', 'a restored point did not match');
        return 0;
      }),
    );
  return program;
}

async function main(argv: string[]): Promise<void> {
  const json = argv.includes('--json');
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      if (json && err.exitCode !== 0) printJson({ error: { code: 'USAGE', message: err.message.replace(/^error: /, ''), details: {} } });
      return;
    }
    process.exitCode = reportError(err, json);
  }
}

await main(process.argv);
