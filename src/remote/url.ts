/**
 * Whether a `--repo` names a media agent. Kept apart from the HTTP client so the CLI can
 * decide without loading it (commands load src/remote/ only for agent repositories).
 */

/** True for `http://...` and `https://...` repositories. */
export function isRemoteRepo(repo: string | undefined): repo is string {
  return repo !== undefined && /^https?:\/\//i.test(repo);
}

/** The `--repo` value, or CHUNKVAULT_REPO, when it names a media agent. */
export function remoteRepoOf(o: { repo?: string }): string | undefined {
  const r = o.repo ?? process.env.CHUNKVAULT_REPO;
  return isRemoteRepo(r) ? r : undefined;
}
