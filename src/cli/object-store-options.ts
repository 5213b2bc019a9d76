/**
 * `--endpoint` and `--cache` for s3:// repositories. They reach the engine through the
 * environment (CHUNKVAULT_S3_ENDPOINT, CHUNKVAULT_CACHE), as the AWS tools' settings do.
 */
import { Option } from 'commander';

export const endpointOption = () => new Option('--endpoint <url>', 's3:// repositories: the S3 endpoint (default: $CHUNKVAULT_S3_ENDPOINT, else as the AWS tools: $AWS_ENDPOINT_URL_S3, ~/.aws/config)');
export const cacheOption = () => new Option('--cache <dir>', 's3:// repositories: the local cache directory (default: $CHUNKVAULT_CACHE, else $XDG_CACHE_HOME/chunkvault/<repo id>)');

/** Copies --endpoint and --cache from parsed command options into the environment. */
export function objectStoreOptions(args: readonly unknown[]): void {
  for (const a of args) {
    if (typeof a !== 'object' || a === null) continue;
    const o = a as { endpoint?: unknown; cache?: unknown };
    if (typeof o.endpoint === 'string') process.env['CHUNKVAULT_S3_ENDPOINT'] = o.endpoint;
    if (typeof o.cache === 'string') process.env['CHUNKVAULT_CACHE'] = o.cache;
  }
}
