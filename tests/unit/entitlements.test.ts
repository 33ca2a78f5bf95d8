import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import type { Approval } from '../../src/approvals/approval';
import { entitlementStatus, recordStatus } from '../../src/entitlements/records';
import { matchesSubjectPattern } from '../../src/entitlements/subject-pattern';
import { attributesRead } from '../../src/policy/claims-used';

describe('subject patterns: * is any run of characters, the whole subject must match', () => {
  const cases: [string, string, boolean][] = [
    ['repo:acme/api:*', 'repo:acme/api:ref:refs/heads/main', true],
    ['repo:acme/api:*', 'repo:acme/api:', true],
    ['repo:acme/api:*', 'repo:acme/api', false],
    ['repo:acme/api:*', 'repo:acme/api-v2:ref:main', false],
    ['repo:acme/api:*', 'xrepo:acme/api:ref:main', false],
    ['exact', 'exact', true],
    ['exact', 'exact2', false],
    ['exact', 'xexact', false],
    ['*', 'anything at all', true],
    ['*', '', true],
    ['a*b*c', 'abc', true],
    ['a*b*c', 'a-b-b-c', true],
    ['a*b*c', 'a-c-b', false],
    ['ab*ba', 'aba', false],
    ['system:serviceaccount:*:deployer', 'system:serviceaccount:prod:deployer', true],
    ['system:serviceaccount:*:deployer', 'system:serviceaccount:prod:deployer:x', false],
    // Regular-expression metacharacters are literal: no injection.
    ['repo:acme/.*', 'repo:acme/api', false],
    ['repo:acme/.*', 'repo:acme/.main', true],
    ['a.c', 'abc', false],
    ['a+', 'aa', false],
    ['a+', 'a+', true],
    ['(x|y)', 'x', false],
    ['[ab]*', 'a', false],
    ['[ab]*', '[ab]anything', true],
    ['^start$', 'start', false],
    ['^start$', '^start$', true],
    ['back\\slash*', 'back\\slash!', true],
    ['?', 'a', false],
  ];
  it.each(cases)('%s against %s → %s', (pattern, subject, expected) => {
    expect(matchesSubjectPattern(pattern, subject)).toBe(expected);
  });

  it('does not blow up on a pattern built to make a backtracking matcher explode', () => {
    const subject = 'a'.repeat(20_000);
    expect(matchesSubjectPattern(`${'*a'.repeat(50)}b`, subject)).toBe(false);
  });
});

describe('record status: derived from the approval, the expiry and revocation', () => {
  const nowMs = 1_000_000;
  const approval = (status: Approval['status'], expiresAtMs = nowMs + 1000) => ({
    kind: 'entitlement' as const,
    status,
    expiresAtMs,
  });
  const record = { expiresAtMs: nowMs + 5000 };
  const cases: [string, Parameters<typeof recordStatus>, string][] = [
    ['approved and unexpired', [record, approval('approved', nowMs - 1), nowMs], 'active'],
    ['pending', [record, approval('pending'), nowMs], 'pending'],
    ['pending past its review window', [record, approval('pending', nowMs), nowMs], 'lapsed'],
    ['denied', [record, approval('denied'), nowMs], 'denied'],
    ['approved, record expired', [{ expiresAtMs: nowMs }, approval('approved'), nowMs], 'expired'],
    ['approved, revoked', [{ ...record, revokedAtMs: nowMs - 1 }, approval('approved'), nowMs], 'revoked'],
    ['approval gone (fails closed)', [record, null, nowMs], 'lapsed'],
  ];
  it.each(cases)('%s', (_label, args, expected) => {
    expect(recordStatus(...args)).toBe(expected);
  });

  it('an active entitlement under an inactive enrolment is suspended', () => {
    expect(entitlementStatus('active', 'active')).toBe('active');
    expect(entitlementStatus('active', 'revoked')).toBe('suspended');
    expect(entitlementStatus('active', 'pending')).toBe('suspended');
    expect(entitlementStatus('revoked', 'active')).toBe('revoked');
  });
});

describe('which context attributes a policy set reads (decides whether entitlements are looked up)', () => {
  const read = (text: string) => {
    const parts = cedar.policySetTextToParts(text);
    if (parts.type === 'failure') throw new Error('bad policy');
    const tree = attributesRead(
      parts.policies.map((policy) => {
        const json = cedar.policyToJson(policy);
        if (json.type === 'failure') throw new Error('bad policy');
        return json.json;
      }),
      'context',
    );
    return tree && tree.keys();
  };
  it.each([
    ['permit(principal, action, resource) when { context.ttlSeconds < 60 };', ['ttlSeconds']],
    ['permit(principal, action, resource) when { context.entitled };', ['entitled']],
    [
      'permit(principal, action, resource) when { context has entitlement && context.entitlement.owner == "x" };',
      ['entitlement'],
    ],
    ['permit(principal, action, resource) when { context.task.ticket like "OPS-*" };', ['task']],
  ])('%s', (text, expected) => {
    expect([...(read(text) ?? [])].sort()).toEqual(expected);
  });
  it('a policy using context whole may read anything (null)', () => {
    expect(read('permit(principal, action, resource) when { context == {} };')).toBeNull();
  });
});
