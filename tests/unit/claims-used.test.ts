import { writeFileSync } from 'node:fs';
import path from 'node:path';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import type { PolicyJson } from '@cedar-policy/cedar-wasm/nodejs';
import { createPolicyEngine } from '../../src/policy/cedar-engine';
import { attributesRead, prune, type ReadTree } from '../../src/policy/claims-used';
import { issueRequest } from '../../src/policy/vocabulary';
import type { Identity } from '../../src/domain/types';
import { tempDir } from '../support/fixtures';

/** The names a tree reads at its top, sorted, or null (read whole). */
const names = (tree: ReadTree | null | undefined) => (tree == null ? null : [...tree.keys()].sort());
/** The claim names the policies read off the principal (null: all of them). */
const claimsUsed = (policies: PolicyJson[]) => {
  const principal = attributesRead(policies, 'principal');
  if (principal === null) return null;
  const claims = principal.get('claims');
  return claims === undefined ? [] : names(claims);
};

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
    expect(claimsUsed(json(...texts))).toEqual(expected);
  });

  it('prunes to the used names, and keeps everything when the record is used whole', () => {
    const claims = { a: '1', b: '2', c: '3' };
    const reading = (...read: string[]): ReadTree => new Map(read.map((name) => [name, null]));
    expect(prune(claims, reading('a', 'z'))).toEqual({ a: '1' });
    expect(prune(claims, null)).toBe(claims);
    // Only the token's own claims: nothing inherited from Object.prototype slips into a policy request.
    expect(prune(claims, reading('constructor', 'toString'))).toEqual({});
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
    expect(names(attributesRead(json(text), variable))).toEqual(
      expected === null ? null : [...expected].sort(),
    );
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
    expect(
      prune(
        { a: 1, b: 2 },
        new Map([
          ['a', null],
          ['toString', null],
        ]),
      ),
    ).toEqual({ a: 1 });
    const whole = { a: 1 };
    expect(prune(whole, null)).toBe(whole);
  });

  it.each<[string, string, 'principal' | 'resource' | 'context', unknown]>([
    [
      'a field of the task, and one presence test',
      'permit(principal, action, resource) when { context.task.ticket like "OPS-*" && context.task has ref };',
      'context',
      { task: { ticket: 'OPS-1', ref: '' } },
    ],
    [
      'a set read whole under the task',
      'permit(principal, action, resource) when { context.task.grants.contains("g") && context.ttlSeconds < 60 };',
      'context',
      { task: { grants: ['g', 'h'] }, ttlSeconds: 30 },
    ],
    [
      'the task whole beside one of its fields',
      'permit(principal, action, resource) when { context.task.ticket == "x" && context.task != {} };',
      'context',
      { task: { id: 't', purpose: 'p', ticket: 'OPS-1', ref: '', grants: ['g', 'h'], ageSeconds: 3 } },
    ],
    [
      'an attribute read off an entity literal, which may be the principal itself',
      'permit(principal, action, resource) when { Workload::"gh/s".kind == "ci" };',
      'principal',
      { issuer: 'gh', kind: 'ci', claims: { a: '1', b: '2' } },
    ],
    [
      'claims of the principal, down to the claim',
      'permit(principal, action, resource) when { principal.claims.a == "1" && principal.issuer == "gh" };',
      'principal',
      { issuer: 'gh', claims: { a: '1' } },
    ],
  ])('prunes nested records to what is read: %s', (_label, text, variable, expected) => {
    const values = {
      context: {
        task: { id: 't', purpose: 'p', ticket: 'OPS-1', ref: '', grants: ['g', 'h'], ageSeconds: 3 },
        ttlSeconds: 30,
        approved: false,
      },
      principal: { issuer: 'gh', kind: 'ci', claims: { a: '1', b: '2' } },
      resource: { provider: 'jwt' },
    };
    expect(prune(values[variable], attributesRead(json(text), variable))).toEqual(expected);
  });

  it('reads a `has` path the same for every variable, however often the same policies are read', () => {
    // Cedar keeps `has a.b` as an array in the policy's JSON; the engine reads the JSON once per variable.
    const policies = json(
      'forbid(principal, action, resource) when { principal.claims has actor.login && resource has owner.team && context.task has ref };',
    );
    for (let round = 0; round < 3; round++) {
      expect(
        prune(
          { claims: { actor: { login: 'bob' }, other: '1' }, issuer: 'gh' },
          attributesRead(policies, 'principal'),
        ),
      ).toEqual({
        claims: { actor: { login: 'bob' } },
      });
      expect(prune({ owner: { team: 'a', x: 1 }, y: 2 }, attributesRead(policies, 'resource'))).toEqual({
        owner: { team: 'a' },
      });
      expect(
        prune({ task: { ref: '', ticket: 'x' }, ttlSeconds: 1 }, attributesRead(policies, 'context')),
      ).toEqual({
        task: { ref: '' },
      });
    }
  });

  it('a forbid on a nested claim still applies with the claims pruned', () => {
    const dir = tempDir('nested-has');
    const file = path.join(dir, 'p.cedar');
    writeFileSync(
      file,
      `@id("all") permit(principal, action == Action::"issue", resource);
       @id("no-login") forbid(principal, action == Action::"issue", resource) when { principal.claims has actor.login };`,
    );
    const engine = createPolicyEngine(file);
    const decide = (claims: Record<string, unknown>) =>
      engine.evaluate(
        issueRequest(
          { issuer: 'gh', kind: 'github-actions', subject: 's', claims } as unknown as Identity,
          {
            id: 't',
            issuer: 'gh',
            subject: 's',
            kind: 'github-actions',
            purpose: 'p',
            ticket: '',
            ref: '',
            grants: [],
            createdAtMs: 0,
            expiresAtMs: 1,
            state: 'open',
            activeLeases: 0,
          },
          { name: 'g', provider: 'jwt', sensitivity: 'low', approval: 'none' },
          { ttlSeconds: 60, approved: false },
          0,
        ),
      );
    expect(decide({ actor: 'bob' }).allowed).toBe(false);
    expect(decide({ actor: { login: 'alice' } })).toMatchObject({
      allowed: false,
      reason: 'forbidden by no-login',
    });
    expect(decide({ actor: 'carol' })).toMatchObject({ allowed: false });
    expect(decide({ other: 'x' })).toMatchObject({ allowed: true, reason: 'permitted by all' });
  });

  it('gives the same decisions with the task pruned to the fields the policies read', () => {
    const dir = tempDir('task-fields');
    const file = path.join(dir, 'p.cedar');
    writeFileSync(
      file,
      `@id("ops") permit(principal, action == Action::"issue", resource) when { context.task.ticket like "OPS-*" && context.task.grants.contains("g") };
       @id("no-ref") forbid(principal, action == Action::"issue", resource) unless { context.task has ref && context.task.ref like "refs/heads/*" };`,
    );
    const engine = createPolicyEngine(file);
    const identity = {
      issuer: 'gh',
      kind: 'github-actions',
      subject: 's',
      claims: {},
    } as unknown as Identity;
    const decide = (ticket: string, ref: string, grants: string[]) =>
      engine.evaluate(
        issueRequest(
          identity,
          {
            id: 't',
            issuer: 'gh',
            subject: 's',
            kind: 'github-actions',
            purpose: 'a purpose no policy reads',
            ticket,
            ref,
            grants,
            createdAtMs: 0,
            expiresAtMs: 1,
            state: 'open',
            activeLeases: 0,
          },
          { name: 'g', provider: 'jwt', sensitivity: 'low', approval: 'none' },
          { ttlSeconds: 60, approved: false },
          0,
        ),
      ).reason;
    expect(decide('OPS-1', 'refs/heads/main', ['g'])).toBe('permitted by ops');
    expect(decide('OPS-1', 'refs/tags/v1', ['g'])).toBe('forbidden by no-ref');
    expect(decide('DEV-1', 'refs/heads/main', ['g'])).toBe('no permit policy matched');
    expect(decide('OPS-1', 'refs/heads/main', ['h'])).toBe('no permit policy matched');
  });
});
