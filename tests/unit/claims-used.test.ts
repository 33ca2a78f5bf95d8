import { writeFileSync } from 'node:fs';
import path from 'node:path';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import type { PolicyJson } from '@cedar-policy/cedar-wasm/nodejs';
import { createPolicyEngine } from '../../src/policy/cedar-engine';
import { claimsUsed, pruneClaims } from '../../src/policy/claims-used';
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
