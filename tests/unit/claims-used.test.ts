import { writeFileSync } from 'node:fs';
import path from 'node:path';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import type { PolicyJson } from '@cedar-policy/cedar-wasm/nodejs';
import { createPolicyEngine } from '../../src/policy/cedar-engine';
import { claimsUsed, entityAttributesRead, pruneClaims, pruneRecord } from '../../src/policy/claims-used';
import { issueRequest } from '../../src/policy/vocabulary';
import type { Identity } from '../../src/domain/types';
import { tempDir } from '../support/fixtures';

const json = (...texts: string[]): PolicyJson[] =>
  texts.map((text) => {
    const answer = cedar.policyToJson(text);
    if (answer.type === 'failure') throw new Error(answer.errors[0]?.message);
    return answer.json;
  });

describe('which claims a policy set can read', () => {
  it.each<[string, string[], string[] | null]>([
    [
      'dot access',
      ['permit(principal, action, resource) when { principal.claims.repository == "a/b" };'],
      ['repository'],
    ],
    [
      'index access with a dotted name',
      ['permit(principal, action, resource) when { principal.claims["kubernetes.io.namespace"] == "x" };'],
      ['kubernetes.io.namespace'],
    ],
    [
      'has, then access',
      [
        'forbid(principal, action, resource) unless { principal.claims has environment && principal.claims.environment == "prod" };',
      ],
      ['environment'],
    ],
    [
      'several policies',
      [
        'permit(principal, action, resource) when { principal.claims.a == "1" };',
        'permit(principal, action, resource) when { principal.claims.b like "x*" };',
      ],
      ['a', 'b'],
    ],
    ['no claims at all', ['permit(principal, action, resource) when { principal.issuer == "x" };'], []],
    [
      'the record used whole: everything',
      ['permit(principal, action, resource) when { principal.claims == {"a": "1"} };'],
      null,
    ],
  ])('%s', (_label, texts, expected) => {
    const used = claimsUsed(json(...texts));
    expect(used === null ? null : [...used].sort()).toEqual(expected);
  });

  it('prunes to the used names, and keeps everything when the record is used whole', () => {
    const claims = { a: '1', b: '2', c: '3' };
    expect(pruneClaims(claims, new Set(['a', 'z']))).toEqual({ a: '1' });
    expect(pruneClaims(claims, null)).toBe(claims);
    // Only the token's own claims: nothing inherited from Object.prototype slips into a policy request.
    expect(pruneClaims(claims, new Set(['constructor', 'toString']))).toEqual({});
  });

  it('gives the same decisions with pruned claims, including a claim that is missing', () => {
    const dir = tempDir('claims');
    const file = path.join(dir, 'p.cedar');
    writeFileSync(
      file,
      `@id("repo") permit(principal, action == Action::"issue", resource) when { principal.claims.repository == "acme/api" };
       @id("env") forbid(principal, action == Action::"issue", resource) unless { principal.claims has environment && principal.claims.environment == "prod" };`,
    );
    const engine = createPolicyEngine(file);
    const identity = (claims: Record<string, string>): Identity => ({
      issuer: 'gh',
      kind: 'github-actions',
      subject: 's',
      claims,
      tokenSha256: '',
      expiresAtMs: 0,
    });
    const task = {
      id: 't',
      issuer: 'gh',
      subject: 's',
      kind: 'github-actions' as const,
      purpose: 'p',
      ticket: '',
      ref: '',
      grants: [],
      createdAtMs: 0,
      expiresAtMs: 1,
      state: 'open' as const,
      activeLeases: 0,
    };
    const grant = { name: 'g', provider: 'jwt', sensitivity: 'low', approval: 'none' };
    const many = Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`noise${i}`, 'x']));
    const decide = (claims: Record<string, string>) =>
      engine.evaluate(issueRequest(identity(claims), task, grant, { ttlSeconds: 60, approved: false }, 0));
    expect(decide({ ...many, repository: 'acme/api', environment: 'prod' })).toMatchObject({
      allowed: true,
      reason: 'permitted by repo',
    });
    expect(decide({ ...many, repository: 'acme/api', environment: 'dev' })).toMatchObject({
      allowed: false,
      reason: 'forbidden by env',
    });
    expect(decide({ ...many, repository: 'acme/api' })).toMatchObject({
      allowed: false,
      reason: 'forbidden by env',
    });
    expect(decide({ ...many, environment: 'prod' })).toMatchObject({ allowed: false });
  });
});

describe('which principal, resource and context attributes a policy set can read', () => {
  it.each<[string, string, 'principal' | 'resource', string[] | null]>([
    [
      'a resource attribute',
      'permit(principal, action, resource) when { resource.provider == "jwt" };',
      'resource',
      ['provider'],
    ],
    [
      'has',
      'forbid(principal, action, resource) when { resource has sensitivity };',
      'resource',
      ['sensitivity'],
    ],
    [
      'none in a scope',
      'permit(principal == Workload::"a/b", action, resource == Grant::"g");',
      'principal',
      [],
    ],
    [
      'claims and kind',
      'permit(principal, action, resource) when { principal.kind == "ci" && principal.claims.x == "1" };',
      'principal',
      ['kind', 'claims'],
    ],
    [
      'the variable whole in a condition',
      'permit(principal, action, resource) when { principal == Workload::"a/b" };',
      'principal',
      null,
    ],
    [
      'in a condition',
      'permit(principal, action, resource) when { resource in [Grant::"g"] };',
      'resource',
      null,
    ],
  ])('%s', (_label, text, variable, expected) => {
    const read = entityAttributesRead(json(text), variable);
    expect(read === null ? null : [...read].sort()).toEqual(expected === null ? null : [...expected].sort());
  });

  it('gives the same decisions when Cedar gets only the attributes the policies read', () => {
    const dir = tempDir('attrs');
    const file = path.join(dir, 'p.cedar');
    writeFileSync(
      file,
      `@id("low") permit(principal, action == Action::"issue", resource) when { resource.sensitivity == "low" && context.ttlSeconds <= 600 && context.task.ticket like "OPS-*" };
       @id("no-ci") forbid(principal, action == Action::"issue", resource) when { principal.kind == "ci" && context has entitlement };`,
    );
    const engine = createPolicyEngine(file);
    expect(engine.readsContext('approved')).toBe(false);
    const identity = (kind: string): Identity =>
      ({ issuer: 'gh', kind, subject: 's', claims: { a: '1' }, tokenSha256: '', expiresAtMs: 0 }) as Identity;
    const task = {
      id: 't',
      issuer: 'gh',
      subject: 's',
      kind: 'github-actions' as const,
      purpose: 'p',
      ticket: 'OPS-1',
      ref: '',
      grants: [],
      createdAtMs: 0,
      expiresAtMs: 1,
      state: 'open' as const,
      activeLeases: 0,
    };
    const entitlement = {
      id: 'e',
      owner: 'o',
      purpose: 'p',
      expiresInSeconds: 60,
      enrolment: { id: 'n', owner: 'o' },
    };
    const decide = (sensitivity: string, kind: string, ttlSeconds: number, entitled: boolean) =>
      engine.evaluate(
        issueRequest(
          identity(kind),
          task,
          { name: 'g', provider: 'jwt', sensitivity, approval: 'none' },
          {
            ttlSeconds,
            approved: false,
            entitlement: entitled ? entitlement : null,
          },
          0,
        ),
      ).reason;
    expect(decide('low', 'github-actions', 60, false)).toBe('permitted by low');
    expect(decide('high', 'github-actions', 60, false)).toBe('no permit policy matched');
    expect(decide('low', 'github-actions', 601, false)).toBe('no permit policy matched');
    expect(decide('low', 'ci', 60, false)).toBe('permitted by low');
    expect(decide('low', 'ci', 60, true)).toBe('forbidden by no-ci');
  });

  it('keeps only the named attributes of a record, never an inherited one', () => {
    expect(pruneRecord({ a: 1, b: 2 }, new Set(['a', 'toString']))).toEqual({ a: 1 });
    const whole = { a: 1 };
    expect(pruneRecord(whole, null)).toBe(whole);
  });
});
