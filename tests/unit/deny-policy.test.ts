import {
  cutOffAll,
  HOUR_MS,
  CLOCK_SKEW_MS,
  MAX_SESSION_MS,
  parseDenyDocument,
  policySize,
  prune,
  renderDenyDocument,
  type DeniedSession,
  type DenyDocument,
} from '../../src/providers/aws-sts/deny-policy';

/** 12:00:00 UTC exactly: the next hour ends at 13:00. */
const NOW_MS = Date.UTC(2025, 0, 15, 12, 0, 0);
const MINUTE_MS = 60_000;
const epochSeconds = (ms: number) => ms / 1000;

const ROLE_ID = 'AROA3XFRBF535PLBIFPI4';
const session = (name: string, notAfterMs: number, issuedAtMs = notAfterMs - HOUR_MS): DeniedSession => ({
  sessionId: `${ROLE_ID}:tl-${name}`,
  notAfterMs,
  issuedAtMs,
});

const A = session('a', NOW_MS + 10 * MINUTE_MS);
const B = session('b', NOW_MS + 50 * MINUTE_MS);
/** Expires in the hour after A and B. */
const C = session('c', NOW_MS + 70 * MINUTE_MS);

/** A statement an operator added to the broker's policy by hand. */
const FOREIGN = [
  {
    Sid: 'BreakGlassDeny',
    Effect: 'Deny',
    Action: 's3:DeleteBucket',
    Resource: '*',
    Condition: { StringNotEquals: { 'aws:PrincipalTag/oncall': 'true' } },
  },
  { Effect: 'Deny', Action: 'iam:*', Resource: '*' },
  // Looks like ours but is not: no epoch seconds after the prefix.
  { Sid: 'TaskleaseSessionsUntilSoon', Effect: 'Deny', Action: '*', Resource: '*' },
];

const empty = (): DenyDocument => ({ sessions: [], cutoffMs: 0, foreign: [] });
const statementsOf = (text: string) => (JSON.parse(text) as { Statement: Record<string, any>[] }).Statement;
const ids = (document: DenyDocument) => document.sessions.map((s) => s.sessionId).sort();

describe('renderDenyDocument', () => {
  it('groups sessions by the hour they expire in, one deny statement per hour', () => {
    const text = renderDenyDocument({ sessions: [C, B, A], cutoffMs: 0, foreign: [] });
    const policy = JSON.parse(text);
    expect(policy.Version).toBe('2012-10-17');
    expect(policy.Statement).toEqual([
      {
        Sid: `TaskleaseSessionsUntil${epochSeconds(NOW_MS + HOUR_MS)}`,
        Effect: 'Deny',
        Action: '*',
        Resource: '*',
        Condition: { StringEquals: { 'aws:userid': [A.sessionId, B.sessionId] } },
      },
      {
        Sid: `TaskleaseSessionsUntil${epochSeconds(NOW_MS + 2 * HOUR_MS)}`,
        Effect: 'Deny',
        Action: '*',
        Resource: '*',
        Condition: { StringEquals: { 'aws:userid': [C.sessionId] } },
      },
    ]);
  });

  it('lists a session once even when it is given twice', () => {
    const [statement] = statementsOf(renderDenyDocument({ sessions: [A, A, B], cutoffMs: 0, foreign: [] }));
    expect(statement?.Condition.StringEquals['aws:userid']).toEqual([A.sessionId, B.sessionId]);
  });

  it('writes a cut-off as a deny on the token issue time, in ISO seconds', () => {
    const cutoffMs = NOW_MS + 30_000;
    const [statement] = statementsOf(renderDenyDocument({ sessions: [], cutoffMs, foreign: [] }));
    expect(statement).toEqual({
      Sid: `TaskleaseCutoff${epochSeconds(cutoffMs)}`,
      Effect: 'Deny',
      Action: '*',
      Resource: '*',
      Condition: { DateLessThan: { 'aws:TokenIssueTime': '2025-01-15T12:00:30Z' } },
    });
  });

  it('rounds a cut-off within a second up, never down (it must still cover what it was meant to)', () => {
    const [statement] = statementsOf(renderDenyDocument({ ...empty(), cutoffMs: NOW_MS + 30_001 }));
    expect(statement?.Sid).toBe(`TaskleaseCutoff${epochSeconds(NOW_MS) + 31}`);
    expect(statement?.Condition.DateLessThan['aws:TokenIssueTime']).toBe('2025-01-15T12:00:31Z');
  });

  it('keeps foreign statements verbatim, alongside its own', () => {
    const statements = statementsOf(
      renderDenyDocument({ sessions: [A], cutoffMs: NOW_MS, foreign: FOREIGN }),
    );
    expect(statements.slice(0, FOREIGN.length)).toEqual(FOREIGN);
    expect(statements.slice(FOREIGN.length).map((s) => s.Sid)).toEqual([
      `TaskleaseCutoff${epochSeconds(NOW_MS)}`,
      `TaskleaseSessionsUntil${epochSeconds(NOW_MS + HOUR_MS)}`,
    ]);
  });

  it('writes no whitespace, so its length is what IAM counts', () => {
    const text = renderDenyDocument({ sessions: [A, B, C], cutoffMs: NOW_MS, foreign: [] });
    expect(text).not.toMatch(/\s/);
    expect(policySize(text)).toBe(text.length);
  });
});

describe('parseDenyDocument', () => {
  const document: DenyDocument = { sessions: [A, B, C], cutoffMs: NOW_MS - 5 * MINUTE_MS, foreign: FOREIGN };
  /** What a parse gives back: expiry at the end of its hour, issue time unknown. */
  const readBack = (s: DeniedSession): DeniedSession => ({
    sessionId: s.sessionId,
    notAfterMs: Math.ceil(s.notAfterMs / HOUR_MS) * HOUR_MS,
    issuedAtMs: 0,
  });

  it('reads back what render wrote', () => {
    const parsed = parseDenyDocument(renderDenyDocument(document));
    expect(parsed.cutoffMs).toBe(document.cutoffMs);
    expect(parsed.foreign).toEqual(FOREIGN);
    expect(parsed.sessions).toHaveLength(3);
    expect(parsed.sessions).toEqual(expect.arrayContaining([A, B, C].map(readBack)));
  });

  it('renders what it read to the same policy (a write that adds nothing changes nothing)', () => {
    const text = renderDenyDocument(document);
    expect(renderDenyDocument(parseDenyDocument(text))).toBe(text);
  });

  // An expiry read back too early would drop a revoked session's deny while the session still works.
  it('never reads an expiry earlier than the real one', () => {
    for (let minute = -90; minute <= 12 * 60; minute += 7) {
      const s = session(`m${minute}`, NOW_MS + minute * MINUTE_MS + 123);
      const [read] = parseDenyDocument(renderDenyDocument({ ...empty(), sessions: [s] })).sessions;
      expect(read?.notAfterMs).toBeGreaterThanOrEqual(s.notAfterMs);
      expect(read?.notAfterMs).toBeLessThan(s.notAfterMs + HOUR_MS);
    }
  });

  it.each([
    ['URL-encoded, as GetRolePolicy returns it', (text: string) => encodeURIComponent(text)],
    [
      'strictly RFC 3986 encoded',
      (text: string) =>
        encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`),
    ],
    [
      'pretty-printed and URL-encoded',
      (text: string) => encodeURIComponent(JSON.stringify(JSON.parse(text), null, 4)),
    ],
    ['pretty-printed, not encoded', (text: string) => `\n  ${JSON.stringify(JSON.parse(text), null, 2)}\n`],
  ])('reads a policy %s', (_label, transform) => {
    const text = renderDenyDocument(document);
    expect(parseDenyDocument(transform(text))).toEqual(parseDenyDocument(text));
  });

  it('reads a literal % in a foreign statement of an encoded policy', () => {
    const foreign = [{ Sid: 'Pct', Effect: 'Deny', Action: '*', Resource: 'arn:aws:s3:::b/100%/*' }];
    const text = renderDenyDocument({ ...empty(), foreign });
    expect(parseDenyDocument(encodeURIComponent(text)).foreign).toEqual(foreign);
  });

  it('reads a statement edited by hand: one object instead of a list, one id instead of a list', () => {
    const until = epochSeconds(NOW_MS + HOUR_MS);
    const text = JSON.stringify({
      Version: '2012-10-17',
      Statement: {
        Sid: `TaskleaseSessionsUntil${until}`,
        Effect: 'Deny',
        Action: '*',
        Resource: '*',
        Condition: { StringEquals: { 'aws:userid': A.sessionId } },
      },
    });
    expect(parseDenyDocument(text)).toEqual({
      sessions: [{ sessionId: A.sessionId, notAfterMs: until * 1000, issuedAtMs: 0 }],
      cutoffMs: 0,
      foreign: [],
    });
  });

  it('keeps the latest of two cut-offs', () => {
    const text = JSON.stringify({
      Version: '2012-10-17',
      Statement: [
        JSON.parse(renderDenyDocument({ ...empty(), cutoffMs: NOW_MS + 60_000 })).Statement[0],
        JSON.parse(renderDenyDocument({ ...empty(), cutoffMs: NOW_MS })).Statement[0],
      ],
    });
    expect(parseDenyDocument(text).cutoffMs).toBe(NOW_MS + 60_000);
  });

  it.each([
    ['no policy', undefined],
    ['an empty text', ''],
  ])('reads %s as an empty document', (_label, text) => {
    expect(parseDenyDocument(text)).toEqual(empty());
  });
});

describe('prune', () => {
  it('drops sessions that expired more than the clock-skew margin ago, keeps the rest', () => {
    const expired = session('gone', NOW_MS - CLOCK_SKEW_MS);
    // Expired by the broker's clock, but AWS's may be behind: kept for the margin.
    const justExpired = session('just', NOW_MS - 1);
    const pruned = prune({ sessions: [expired, justExpired, A, C], cutoffMs: 0, foreign: FOREIGN }, NOW_MS);
    expect(ids(pruned)).toEqual([A.sessionId, C.sessionId, justExpired.sessionId].sort());
    expect(pruned.foreign).toEqual(FOREIGN);
  });

  it('drops a cut-off older than the longest session, keeps a younger one', () => {
    expect(prune({ ...empty(), cutoffMs: NOW_MS - MAX_SESSION_MS }, NOW_MS).cutoffMs).toBe(0);
    expect(prune({ ...empty(), cutoffMs: NOW_MS - 13 * HOUR_MS }, NOW_MS).cutoffMs).toBe(0);
    const young = NOW_MS - MAX_SESSION_MS + 1000;
    expect(prune({ ...empty(), cutoffMs: young }, NOW_MS).cutoffMs).toBe(young);
    expect(prune({ ...empty(), cutoffMs: NOW_MS + 1000 }, NOW_MS).cutoffMs).toBe(NOW_MS + 1000);
  });

  it('drops sessions the cut-off already denies and keeps those issued after it or of unknown issue', () => {
    const cutoffMs = NOW_MS - 10 * MINUTE_MS;
    const before = session('before', NOW_MS + HOUR_MS, cutoffMs - 1000);
    const after = session('after', NOW_MS + HOUR_MS, cutoffMs + 1000);
    const atCutoff = session('at', NOW_MS + HOUR_MS, cutoffMs);
    const unknown = session('unknown', NOW_MS + HOUR_MS, 0);
    const pruned = prune({ sessions: [before, after, atCutoff, unknown], cutoffMs, foreign: [] }, NOW_MS);
    expect(pruned.cutoffMs).toBe(cutoffMs);
    expect(ids(pruned)).toEqual([after.sessionId, atCutoff.sessionId, unknown.sessionId].sort());
  });

  it('keeps a session issued before a cut-off that has itself aged out', () => {
    const cutoffMs = NOW_MS - MAX_SESSION_MS - 1000;
    // Impossible at STS (sessions last at most 12 h) but the document must not lose a live one if it happens.
    const long = session('long', NOW_MS + HOUR_MS, cutoffMs - 1000);
    const pruned = prune({ sessions: [long], cutoffMs, foreign: [] }, NOW_MS);
    expect(pruned).toEqual({ sessions: [long], cutoffMs: 0, foreign: [] });
  });

  it('does not change the document it is given', () => {
    const document: DenyDocument = { sessions: [session('gone', NOW_MS - 1), A], cutoffMs: 1, foreign: [] };
    const copy = structuredClone(document);
    prune(document, NOW_MS);
    expect(document).toEqual(copy);
  });
});

describe('cutOffAll', () => {
  const denies = (cutoffMs: number, s: DeniedSession) => s.issuedAtMs < cutoffMs;

  it('empties the list and puts the cut-off after every listed session, not before now', () => {
    const sessions = [A, B, C, session('fresh', NOW_MS + HOUR_MS, NOW_MS - 200)];
    const cut = cutOffAll({ sessions, cutoffMs: 0, foreign: FOREIGN }, NOW_MS);
    expect(cut.sessions).toEqual([]);
    expect(cut.foreign).toEqual(FOREIGN);
    expect(cut.cutoffMs).toBeGreaterThanOrEqual(NOW_MS);
    for (const s of sessions) expect(denies(cut.cutoffMs, s)).toBe(true);
  });

  it('covers a session issued at the current second (IAM compares whole seconds)', () => {
    const issued = NOW_MS + 400;
    const cut = cutOffAll(
      { ...empty(), sessions: [session('same-second', NOW_MS + HOUR_MS, issued)] },
      NOW_MS + 500,
    );
    expect(cut.cutoffMs % 1000).toBe(0);
    // STS reports the issue second; the deny's DateLessThan must still be later than it.
    expect(cut.cutoffMs).toBeGreaterThan(Math.floor(issued / 1000) * 1000);
    expect(cut.cutoffMs).toBeGreaterThan(issued);
  });

  it('covers a session whose issue time is ahead of the broker clock', () => {
    const ahead = session('ahead', NOW_MS + HOUR_MS, NOW_MS + 90_000);
    const cut = cutOffAll({ ...empty(), sessions: [ahead] }, NOW_MS);
    expect(denies(cut.cutoffMs, ahead)).toBe(true);
  });

  it('never moves an existing cut-off back', () => {
    const later = NOW_MS + 5 * MINUTE_MS;
    expect(cutOffAll({ sessions: [A], cutoffMs: later, foreign: [] }, NOW_MS).cutoffMs).toBe(later);
  });

  it('is a cut-off render writes and parse reads back unchanged', () => {
    const cut = cutOffAll({ sessions: [A, B], cutoffMs: 0, foreign: [] }, NOW_MS + 123);
    const parsed = parseDenyDocument(renderDenyDocument(cut));
    expect(parsed).toEqual({ sessions: [], cutoffMs: cut.cutoffMs, foreign: [] });
  });

  it('after it, prune lists nothing the cut-off covers', () => {
    const sessions = [A, B, C];
    const cut = cutOffAll({ sessions, cutoffMs: 0, foreign: [] }, NOW_MS);
    expect(prune({ ...cut, sessions }, NOW_MS).sessions).toEqual([]);
  });
});

describe('policySize', () => {
  it('ignores whitespace, as IAM does', () => {
    const text = renderDenyDocument({ sessions: [A, B, C], cutoffMs: NOW_MS, foreign: FOREIGN });
    expect(policySize(JSON.stringify(JSON.parse(text), null, 2))).toBe(policySize(text));
    expect(policySize(`\n\t ${text} \r\n`)).toBe(text.length);
  });

  it('grows with every listed session', () => {
    const one = policySize(renderDenyDocument({ ...empty(), sessions: [A] }));
    const two = policySize(renderDenyDocument({ ...empty(), sessions: [A, B] }));
    expect(two - one).toBe(B.sessionId.length + 3);
  });
});
