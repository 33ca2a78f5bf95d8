import { createHash } from 'node:crypto';

/**
 * Names STS accepts, derived from tasklease's own: each is sanitised to the character set STS documents
 * and kept within its length, so no task field or subject can make AssumeRole fail or mean something else.
 */

/** `RoleSessionName`: `tl-<lease id>` (35 characters; STS allows 64 of `[\w+=,.@-]`). CloudTrail shows it. */
export const roleSessionName = (leaseId: string): string =>
  `tl-${leaseId}`.replace(/[^\w+=,.@-]/g, '-').slice(0, 64);

const shortHash = (value: string) => createHash('sha256').update(value).digest('hex').slice(0, 10);
/** What sourceIdentity appends to a subject it had to change; a subject that already ends so is changed too. */
const HASHED = /\.[0-9a-f]{10}$/;

/**
 * `SourceIdentity`: the workload subject in `[\w+=,.@-]`, 2 to 64 characters. A subject that had to be
 * changed or cut gets a hash of the original appended, so two subjects never share one source identity.
 * `repo:org/app:ref:refs/heads/main` becomes `repo-org-app-ref-refs-heads-main.1a2b3c4d5e`.
 */
export function sourceIdentity(subject: string): string {
  const clean = subject.replace(/[^\w+=,.@-]/g, '-');
  const usable = clean === subject && clean.length >= 2 && clean.length <= 64 && !/^aws/i.test(clean);
  if (usable && !HASHED.test(clean)) return clean;
  const suffix = `.${shortHash(subject)}`;
  const base = clean.replace(/^aws/i, 'x-aws').slice(0, 64 - suffix.length);
  return `${base}${suffix}`;
}

/**
 * A session tag value: STS's tag character set `[\p{L}\p{Z}\p{N}_.:/=+\-@]`, at most 256 characters, never
 * cutting a character outside the Basic Multilingual Plane in half.
 */
export function tagValue(value: string): string {
  const clean = value.replace(/[^\p{L}\p{Z}\p{N}_.:/=+\-@]/gu, '_');
  if (clean.length <= 256) return clean;
  const cut = clean.slice(0, 256);
  return /[\uD800-\uDBFF]$/.test(cut) ? cut.slice(0, 255) : cut;
}
