/**
 * Subject patterns of enrolments: `*` stands for any run of characters (none included); everything else is
 * literal, and the pattern must match the whole subject. Matched without a regular expression, so no
 * character of a pattern can mean more than itself (no regex injection) and no pattern can backtrack
 * exponentially: each literal part is found in order with indexOf.
 */
export function matchesSubjectPattern(pattern: string, subject: string): boolean {
  const parts = pattern.split('*');
  if (parts.length === 1) return pattern === subject;
  const first = parts[0] as string;
  const last = parts[parts.length - 1] as string;
  if (first.length + last.length > subject.length) return false;
  if (!subject.startsWith(first) || !subject.endsWith(last)) return false;
  // Leftmost match of each middle part is always safe for `*`-only patterns: a later match leaves less room.
  let at = first.length;
  const end = subject.length - last.length;
  for (const part of parts.slice(1, -1)) {
    const found = subject.indexOf(part, at);
    if (found < 0 || found + part.length > end) return false;
    at = found + part.length;
  }
  return true;
}

/** Printable characters only (no control characters), and not so long that a listing becomes unreadable. */
export const SUBJECT_PATTERN = /^[\x21-\x7e]{1,256}$/;
