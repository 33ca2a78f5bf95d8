/**
 * The inline role policy in which the broker denies revoked STS sessions, as a pure document model.
 *
 * One statement per hour of expiry lists the sessions (`aws:userid` = AssumedRoleId, i.e. `<role id>:<session
 * name>`) that expire within that hour, so a statement whose hour has passed can be dropped with all its
 * sessions. When the list no longer fits, a single time cut-off (`aws:TokenIssueTime`) denies every session
 * of the role issued before it instead. Statements the broker did not write are kept as they are.
 */

export const HOUR_MS = 3_600_000;
/** STS's longest role session: once a cut-off is this old, every session it cut has expired anyway. */
export const MAX_SESSION_MS = 12 * HOUR_MS;
/** A session stays listed this long past its expiry, in case the broker's clock runs ahead of AWS's. */
export const CLOCK_SKEW_MS = 60_000;

const SESSIONS_SID = /^TaskleaseSessionsUntil(\d{1,12})$/;
const CUTOFF_SID = /^TaskleaseCutoff(\d{1,12})$/;

export interface DeniedSession {
  /** The AssumedRoleId, `<role id>:<session name>`. */
  sessionId: string;
  /** When the session expires at STS. */
  notAfterMs: number;
  /** When STS issued it; 0 when unknown (read back from IAM). */
  issuedAtMs: number;
}

export interface DenyDocument {
  sessions: DeniedSession[];
  /** Every session issued before this is denied; 0 for none. */
  cutoffMs: number;
  /** Statements someone else put in the broker's policy, kept verbatim. */
  foreign: unknown[];
}

type Statement = Record<string, unknown> & {
  Sid?: unknown;
  Condition?: Record<string, Record<string, unknown>>;
};

const seconds = (ms: number) => Math.ceil(ms / 1000);
const hourEnd = (ms: number) => Math.ceil(ms / HOUR_MS) * HOUR_MS;
const isoSeconds = (ms: number) => new Date(seconds(ms) * 1000).toISOString().replace('.000Z', 'Z');

/** Reads the policy text IAM returns (GetRolePolicy answers it URL-encoded, RFC 3986). */
export function parseDenyDocument(text: string | undefined): DenyDocument {
  const document: DenyDocument = { sessions: [], cutoffMs: 0, foreign: [] };
  if (!text) return document;
  const json = text.trimStart().startsWith('{') ? text : decodeURIComponent(text);
  const parsed = JSON.parse(json) as { Statement?: Statement[] | Statement };
  const statements = Array.isArray(parsed.Statement)
    ? parsed.Statement
    : parsed.Statement
      ? [parsed.Statement]
      : [];
  for (const statement of statements) {
    const sid = typeof statement.Sid === 'string' ? statement.Sid : '';
    const until = SESSIONS_SID.exec(sid);
    const cutoff = CUTOFF_SID.exec(sid);
    if (until) {
      const ids = statement.Condition?.StringEquals?.['aws:userid'];
      const list = Array.isArray(ids) ? ids : [ids];
      for (const id of list) {
        if (typeof id === 'string')
          document.sessions.push({ sessionId: id, notAfterMs: Number(until[1]) * 1000, issuedAtMs: 0 });
      }
    } else if (cutoff) {
      document.cutoffMs = Math.max(document.cutoffMs, Number(cutoff[1]) * 1000);
    } else {
      document.foreign.push(statement);
    }
  }
  return document;
}

const deny = (sid: string, condition: Record<string, Record<string, unknown>>) => ({
  Sid: sid,
  Effect: 'Deny',
  Action: '*',
  Resource: '*',
  Condition: condition,
});

/** The policy text to put; IAM counts its size without whitespace, and JSON.stringify writes none. */
export function renderDenyDocument(document: DenyDocument): string {
  const statements: unknown[] = [...document.foreign];
  if (document.cutoffMs > 0) {
    statements.push(
      deny(`TaskleaseCutoff${seconds(document.cutoffMs)}`, {
        DateLessThan: { 'aws:TokenIssueTime': isoSeconds(document.cutoffMs) },
      }),
    );
  }
  const byHour = new Map<number, string[]>();
  for (const session of document.sessions) {
    const hour = hourEnd(session.notAfterMs);
    byHour.set(hour, [...(byHour.get(hour) ?? []), session.sessionId]);
  }
  for (const [hour, ids] of [...byHour].sort(([a], [b]) => a - b)) {
    statements.push(
      deny(`TaskleaseSessionsUntil${hour / 1000}`, {
        StringEquals: { 'aws:userid': [...new Set(ids)].sort() },
      }),
    );
  }
  return JSON.stringify({ Version: '2012-10-17', Statement: statements });
}

/** IAM's measure of a policy's size: its characters, whitespace excluded. */
export const policySize = (text: string): number => text.replace(/\s/g, '').length;

/**
 * Drops what no longer needs denying at `nowMs`: sessions past their expiry (and the skew margin), sessions an existing cut-off
 * already covers, and a cut-off older than the longest possible session.
 */
export function prune(document: DenyDocument, nowMs: number): DenyDocument {
  const cutoffMs =
    document.cutoffMs > 0 && document.cutoffMs + MAX_SESSION_MS > nowMs ? document.cutoffMs : 0;
  const sessions = document.sessions.filter(
    (session) =>
      session.notAfterMs + CLOCK_SKEW_MS > nowMs &&
      !(cutoffMs > 0 && session.issuedAtMs > 0 && session.issuedAtMs < cutoffMs),
  );
  return { ...document, sessions, cutoffMs };
}

/**
 * The fallback when the list cannot fit: one cut-off after every listed session's issue time (and not
 * before now), which denies them all, and every other session of the role issued before it.
 */
export function cutOffAll(document: DenyDocument, nowMs: number): DenyDocument {
  const latestIssue = Math.max(0, ...document.sessions.map((session) => session.issuedAtMs));
  const cutoffMs = seconds(Math.max(nowMs, latestIssue + 1000, document.cutoffMs)) * 1000;
  return { ...document, sessions: [], cutoffMs };
}
