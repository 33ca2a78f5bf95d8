import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { JWTPayload } from 'jose';
import type { Identity, IssuerKind, Task } from '../../src/domain/types';
import { applyPreset, stringClaims } from '../../src/identity/claim-presets';
import {
  createPolicyEngine,
  PolicyLoadError,
  readPolicies,
  type PolicyEngine,
} from '../../src/policy/cedar-engine';
import { decideIssue } from '../../src/policy/issue-decision';
import { declareTaskRequest, issueRequest, type GrantFacts } from '../../src/policy/vocabulary';
import { platformClaims, tempDir, type Platform } from '../support/fixtures';

const NOW_MS = Date.UTC(2025, 0, 15, 12, 0, 0);

/** An identity exactly as the verifier builds it: string claims flattened, then the kind's preset applied. */
function identityFrom(
  issuer: string,
  kind: IssuerKind,
  platform: Platform,
  overrides: JWTPayload = {},
): Identity {
  const claims = stringClaims({ ...platformClaims(platform), ...overrides });
  const problem = applyPreset(kind, claims, { typ: 'JWT' });
  if (problem) throw new Error(`fixture is not a valid ${kind} token: ${problem}`);
  return {
    issuer,
    kind,
    subject: claims.sub as string,
    claims,
    tokenSha256: 'f'.repeat(64),
    expiresAtMs: NOW_MS + 600_000,
  };
}

const github = (overrides: JWTPayload = {}, issuer = 'github-actions') =>
  identityFrom(issuer, 'github-actions', 'github-actions', overrides);
const gitlab = (overrides: JWTPayload = {}) => identityFrom('gitlab-ci', 'gitlab', 'gitlab', overrides);
const kubernetes = (overrides: JWTPayload = {}) =>
  identityFrom('cluster-a', 'kubernetes', 'kubernetes', overrides);
const spiffe = (overrides: JWTPayload = {}) => identityFrom('spire', 'spiffe', 'spiffe-jwt-svid', overrides);

type TaskFacts = Partial<Pick<Task, 'ticket' | 'ref' | 'purpose' | 'grants'>> & {
  ageSeconds?: number;
  activeLeases?: number;
};

function task(identity: Identity, facts: TaskFacts = {}): Task & { activeLeases: number } {
  const createdAtMs = NOW_MS - (facts.ageSeconds ?? 30) * 1000;
  return {
    id: 'task-1',
    issuer: identity.issuer,
    subject: identity.subject,
    kind: identity.kind,
    purpose: facts.purpose ?? 'publish build artifacts',
    ticket: facts.ticket ?? 'OPS-1234',
    ref: facts.ref ?? 'refs/heads/main',
    grants: facts.grants ?? [],
    createdAtMs,
    expiresAtMs: createdAtMs + 3_600_000,
    state: 'open',
    activeLeases: facts.activeLeases ?? 0,
  };
}

const GRANTS: Record<string, GrantFacts> = {
  'artifacts-api': { name: 'artifacts-api', provider: 'jwt', sensitivity: 'low', approval: 'none' },
  'prod-deploy': { name: 'prod-deploy', provider: 'jwt', sensitivity: 'high', approval: 'none' },
  'reports-read': { name: 'reports-read', provider: 'aws-sts', sensitivity: 'low', approval: 'none' },
  'db-export': { name: 'db-export', provider: 'vault', sensitivity: 'high', approval: 'required' },
};

interface Ask {
  identity: Identity;
  grant?: string;
  ttlSeconds?: number;
  task?: TaskFacts;
}
const ask = ({ identity, grant = 'artifacts-api', ttlSeconds = 600, task: facts }: Ask) =>
  issueRequest(
    identity,
    task(identity, facts),
    GRANTS[grant] as GrantFacts,
    { ttlSeconds, approved: false },
    NOW_MS,
  );

/** A policies folder holding `files`; returns the folder. */
function policyDir(files: Record<string, string>): string {
  const dir = tempDir('policy');
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text);
  return dir;
}
const engineWith = (files: Record<string, string>) => createPolicyEngine(policyDir(files));

describe('default deny', () => {
  it('denies every request when the policy folder holds no policies', () => {
    const engine = engineWith({ 'README.txt': 'not a policy file' });
    expect(engine.policyCount).toBe(0);
    const decision = engine.evaluate(ask({ identity: github() }));
    expect(decision).toEqual({ allowed: false, policyIds: [], reason: 'no permit policy matched' });
  });

  it('denies when policies exist but none matches the request', () => {
    const engine = engineWith({
      'other.cedar': `@id("reports-only") permit(principal, action == Action::"issue", resource == Grant::"reports-read");`,
    });
    const decision = engine.evaluate(ask({ identity: github(), grant: 'artifacts-api' }));
    expect(decision.allowed).toBe(false);
    expect(decision.reason).toBe('no permit policy matched');
    expect(decision.policyIds).toEqual([]);
  });
});

describe('permit on issuer, claims, ticket and TTL (the documented example)', () => {
  let engine: PolicyEngine;
  beforeAll(() => {
    engine = engineWith({
      'github.cedar': `
        @id("gha-artifacts-ops")
        permit(principal, action == Action::"issue", resource == Grant::"artifacts-api")
        when { principal.issuer == "github-actions" && principal.kind == "github-actions"
               && principal.claims.repository == "octo-org/octo-repo"
               && context.task.ticket like "OPS-*" && context.ttlSeconds <= 900 };`,
    });
  });

  it.each<[string, boolean, Ask]>([
    ['the matching repository, an OPS ticket and 600 s', true, { identity: github() }],
    ['a TTL exactly at the bound (900 s)', true, { identity: github(), ttlSeconds: 900 }],
    ['another repository', false, { identity: github({ repository: 'octo-org/other-repo' }) }],
    ['a ticket that is not OPS-*', false, { identity: github(), task: { ticket: 'DEV-12' } }],
    ['a task without a ticket', false, { identity: github(), task: { ticket: '' } }],
    ['a ticket that merely contains OPS-', false, { identity: github(), task: { ticket: 'XOPS-1' } }],
    ['a TTL one second too long', false, { identity: github(), ttlSeconds: 901 }],
    ['the same claims from another issuer (GHES)', false, { identity: github({}, 'ghes') }],
    ['another grant', false, { identity: github(), grant: 'prod-deploy' }],
  ])('%s → allowed: %s', (_label, allowed, request) => {
    const decision = engine.evaluate(ask(request));
    expect(decision.allowed).toBe(allowed);
    expect(decision.reason).toBe(allowed ? 'permitted by gha-artifacts-ops' : 'no permit policy matched');
    expect(decision.policyIds).toEqual(allowed ? ['gha-artifacts-ops'] : []);
  });

  it('never permits declareTask through an issue policy', () => {
    const identity = github();
    const decision = engine.evaluate(declareTaskRequest(identity, task(identity), 600, NOW_MS));
    expect(decision.allowed).toBe(false);
  });
});

describe('forbid wins over permit', () => {
  let engine: PolicyEngine;
  beforeAll(() => {
    engine = engineWith({
      'permit.cedar': `
        @id("any-github-workload")
        permit(principal, action == Action::"issue", resource) when { principal.kind == "github-actions" };`,
      'forbid.cedar': `
        @id("high-sensitivity-main-only")
        forbid(principal, action == Action::"issue", resource)
        when { resource.sensitivity == "high" && context.task.ref != "refs/heads/main" };
        @id("prod-environment-only")
        forbid(principal, action == Action::"issue", resource == Grant::"prod-deploy")
        unless { principal.claims has environment && principal.claims.environment == "prod" };`,
    });
  });

  it.each<[string, string, Ask]>([
    [
      'a low-sensitivity grant from a feature branch',
      'permitted by any-github-workload',
      { identity: github(), task: { ref: 'refs/heads/feature' } },
    ],
    [
      'prod-deploy from main in the prod environment',
      'permitted by any-github-workload',
      { identity: github(), grant: 'prod-deploy' },
    ],
    [
      'prod-deploy from a feature branch',
      'forbidden by high-sensitivity-main-only',
      { identity: github(), grant: 'prod-deploy', task: { ref: 'refs/heads/feature' } },
    ],
    [
      'prod-deploy from the staging environment',
      'forbidden by prod-environment-only',
      { identity: github({ environment: 'staging' }), grant: 'prod-deploy' },
    ],
    // A token without the claim: `has` makes the forbid apply instead of erroring (an erroring forbid is skipped).
    [
      'prod-deploy from a job without an environment',
      'forbidden by prod-environment-only',
      { identity: github({ environment: undefined }), grant: 'prod-deploy' },
    ],
  ])('%s → %s', (_label, reason, request) => {
    const decision = engine.evaluate(ask(request));
    expect(decision.reason).toBe(reason);
    expect(decision.allowed).toBe(reason.startsWith('permitted'));
  });

  it('fails closed when a forbid cannot be evaluated (a claim the token lacks), even with a broad permit', () => {
    const unguarded = engineWith({
      'p.cedar': `@id("broad") permit(principal, action == Action::"issue", resource);`,
      'f.cedar': `@id("prod-only") forbid(principal, action == Action::"issue", resource) when { principal.claims.environment != "prod" };`,
    });
    const decision = unguarded.evaluate(
      ask({ identity: github({ environment: undefined }), grant: 'prod-deploy' }),
    );
    expect(decision.allowed).toBe(false);
    expect(decision.policyIds).toEqual(['prod-only']);
    expect(decision.reason).toMatch(
      /^forbid policy prod-only could not be evaluated .*environment.*: denied$/,
    );
    // With the claim present the same forbid evaluates normally.
    expect(
      unguarded.evaluate(ask({ identity: github({ environment: 'prod' }), grant: 'prod-deploy' })).allowed,
    ).toBe(true);
  });

  it('names every forbid that applied', () => {
    const decision = engine.evaluate(
      ask({
        identity: github({ environment: 'staging' }),
        grant: 'prod-deploy',
        task: { ref: 'refs/heads/feature' },
      }),
    );
    expect(decision.allowed).toBe(false);
    expect([...decision.policyIds].sort()).toEqual(['high-sensitivity-main-only', 'prod-environment-only']);
    expect(decision.reason).toMatch(/^forbidden by /);
  });
});

describe('resource attributes: provider, sensitivity, approval', () => {
  let engine: PolicyEngine;
  beforeAll(() => {
    engine = engineWith({
      'resources.cedar': `
        @id("low-jwt-for-agents")
        permit(principal, action == Action::"issue", resource)
        when { principal.kind == "kubernetes" && resource.provider == "jwt" && resource.sensitivity == "low" };
        @id("vault-for-agents")
        permit(principal, action == Action::"issue", resource)
        when { principal.kind == "kubernetes" && resource.provider == "vault" };
        @id("step-up-required")
        forbid(principal, action == Action::"issue", resource)
        when { resource.approval == "required" && !context.approved };`,
    });
  });

  it.each<[string, string, string]>([
    ['jwt, low', 'permitted by low-jwt-for-agents', 'artifacts-api'],
    ['jwt, high', 'no permit policy matched', 'prod-deploy'],
    ['aws-sts, low', 'no permit policy matched', 'reports-read'],
    ['vault, approval required, asked without an approval', 'forbidden by step-up-required', 'db-export'],
  ])('%s → %s', (_label, reason, grant) => {
    const decision = engine.evaluate(ask({ identity: kubernetes(), grant }));
    expect(decision.reason).toBe(reason);
    expect(decision.allowed).toBe(reason.startsWith('permitted'));
  });
});

describe('context: activeLeases, task age, ref and declared grants', () => {
  let engine: PolicyEngine;
  beforeAll(() => {
    engine = engineWith({
      'context.cedar': `
        @id("main-within-an-hour")
        permit(principal, action == Action::"issue", resource == Grant::"artifacts-api")
        when { context.task.ref == "refs/heads/main" && context.task.ageSeconds < 3600 };
        @id("declared-reports")
        permit(principal, action == Action::"issue", resource == Grant::"reports-read")
        when { context.task.grants.contains("reports-read") };
        @id("cap-per-task")
        forbid(principal, action == Action::"issue", resource) when { context.activeLeases >= 5 };`,
    });
  });

  it.each<[string, string, Ask]>([
    [
      '4 live leases in the task',
      'permitted by main-within-an-hour',
      { identity: gitlab(), task: { activeLeases: 4 } },
    ],
    [
      '5 live leases in the task',
      'forbidden by cap-per-task',
      { identity: gitlab(), task: { activeLeases: 5 } },
    ],
    [
      'a task 3599 s old',
      'permitted by main-within-an-hour',
      { identity: gitlab(), task: { ageSeconds: 3599 } },
    ],
    ['a task 3600 s old', 'no permit policy matched', { identity: gitlab(), task: { ageSeconds: 3600 } }],
    [
      'a task on a feature branch',
      'no permit policy matched',
      { identity: gitlab(), task: { ref: 'refs/heads/feature' } },
    ],
    [
      'a task on a tag',
      'no permit policy matched',
      { identity: gitlab(), task: { ref: 'refs/tags/v1.0.0' } },
    ],
    [
      'a grant the task declared',
      'permitted by declared-reports',
      { identity: gitlab(), grant: 'reports-read', task: { grants: ['reports-read'] } },
    ],
    [
      'a grant the task did not declare',
      'no permit policy matched',
      { identity: gitlab(), grant: 'reports-read', task: { grants: ['artifacts-api'] } },
    ],
  ])('%s → %s', (_label, reason, request) => {
    const decision = engine.evaluate(ask(request));
    expect(decision.reason).toBe(reason);
    expect(decision.allowed).toBe(reason.startsWith('permitted'));
  });
});

describe('identities of each kind, with their derived claims', () => {
  let engine: PolicyEngine;
  beforeAll(() => {
    engine = engineWith({
      'kinds.cedar': `
        @id("gitlab-protected-ref")
        permit(principal, action == Action::"issue", resource == Grant::"prod-deploy")
        when { principal.kind == "gitlab" && principal.claims.project_path == "mygroup/myproject"
               && principal.claims.ref_protected == "true" };
        @id("k8s-agents-namespace")
        permit(principal, action == Action::"issue", resource == Grant::"artifacts-api")
        when { principal.kind == "kubernetes" && principal.claims.namespace == "agents"
               && principal.claims.serviceaccount == "planner" };
        @id("k8s-raw-namespace-claim")
        permit(principal, action == Action::"issue", resource == Grant::"reports-read")
        when { principal.kind == "kubernetes" && principal.claims["kubernetes.io.namespace"] == "agents" };
        @id("spiffe-trust-domain")
        permit(principal, action == Action::"issue", resource == Grant::"artifacts-api")
        when { principal.kind == "spiffe" && principal.claims.trust_domain == "example.org"
               && principal.claims.spiffe_path like "/ns/agents/*" };
        @id("principal-by-subject")
        permit(principal == Workload::"github-actions/repo:octo-org/octo-repo:environment:prod", action == Action::"issue", resource == Grant::"reports-read");`,
    });
  });

  it.each<[string, string, Ask]>([
    [
      'GitLab, protected ref',
      'permitted by gitlab-protected-ref',
      { identity: gitlab(), grant: 'prod-deploy' },
    ],
    [
      'GitLab, unprotected ref',
      'no permit policy matched',
      { identity: gitlab({ ref_protected: 'false' }), grant: 'prod-deploy' },
    ],
    [
      'GitLab, another project',
      'no permit policy matched',
      { identity: gitlab({ project_path: 'mygroup/fork' }), grant: 'prod-deploy' },
    ],
    [
      'Kubernetes, agents/planner (derived namespace + serviceaccount)',
      'permitted by k8s-agents-namespace',
      { identity: kubernetes() },
    ],
    [
      'Kubernetes, another namespace',
      'no permit policy matched',
      {
        identity: kubernetes({
          sub: 'system:serviceaccount:default:planner',
          'kubernetes.io': { namespace: 'default' },
        }),
      },
    ],
    [
      'Kubernetes, namespace derived from sub when the token has no kubernetes.io claim',
      'permitted by k8s-agents-namespace',
      { identity: kubernetes({ 'kubernetes.io': undefined }) },
    ],
    [
      'Kubernetes, the raw flattened claim kubernetes.io.namespace',
      'permitted by k8s-raw-namespace-claim',
      { identity: kubernetes(), grant: 'reports-read' },
    ],
    ['SPIFFE, trusted domain and path', 'permitted by spiffe-trust-domain', { identity: spiffe() }],
    [
      'SPIFFE, another trust domain',
      'no permit policy matched',
      { identity: spiffe({ sub: 'spiffe://evil.example/ns/agents/sa/planner' }) },
    ],
    [
      'SPIFFE, another path',
      'no permit policy matched',
      { identity: spiffe({ sub: 'spiffe://example.org/ns/batch/sa/planner' }) },
    ],
    [
      'GitHub, principal named by its subject',
      'permitted by principal-by-subject',
      { identity: github(), grant: 'reports-read' },
    ],
    [
      'the same subject from another issuer',
      'no permit policy matched',
      { identity: github({}, 'github-enterprise'), grant: 'reports-read' },
    ],
    [
      'GitHub, another environment (another subject)',
      'no permit policy matched',
      { identity: github({ sub: 'repo:octo-org/octo-repo:environment:dev' }), grant: 'reports-read' },
    ],
  ])('%s → %s', (_label, reason, request) => {
    const decision = engine.evaluate(ask(request));
    expect(decision.reason).toMatch(new RegExp(`^${reason}`));
    expect(decision.allowed).toBe(reason.startsWith('permitted'));
  });
});

describe('declareTask, with resource Task', () => {
  let engine: PolicyEngine;
  beforeAll(() => {
    engine = engineWith({
      'declare.cedar': `
        @id("declare-in-agents-with-ticket")
        permit(principal, action == Action::"declareTask", resource is Task)
        when { principal.kind == "kubernetes" && principal.claims.namespace == "agents"
               && context.task.ticket != "" && context.ttlSeconds <= 7200 };`,
    });
  });
  const declare = (identity: Identity, facts: TaskFacts = {}, ttlSeconds = 3600) =>
    engine.evaluate(declareTaskRequest(identity, task(identity, facts), ttlSeconds, NOW_MS));

  it.each<[string, boolean, () => ReturnType<typeof declare>]>([
    ['a ticketed task from the agents namespace', true, () => declare(kubernetes())],
    ['a task without a ticket', false, () => declare(kubernetes(), { ticket: '' })],
    ['a task longer than two hours', false, () => declare(kubernetes(), {}, 7201)],
    [
      'a task from another namespace',
      false,
      () =>
        declare(
          kubernetes({ sub: 'system:serviceaccount:default:x', 'kubernetes.io': { namespace: 'default' } }),
        ),
    ],
    [
      'an issue request from the same workload',
      false,
      () => engine.evaluate(ask({ identity: kubernetes() })),
    ],
  ])('%s → allowed: %s', (_label, allowed, run) => {
    const decision = run();
    expect(decision.allowed).toBe(allowed);
    expect(decision.reason).toBe(
      allowed ? 'permitted by declare-in-agents-with-ticket' : 'no permit policy matched',
    );
  });
});

describe('policy names', () => {
  it('names a policy by its @id, or by file:index when it has none', () => {
    const dir = policyDir({
      'a.cedar': `@id("named") permit(principal, action == Action::"issue", resource == Grant::"artifacts-api");`,
      'b.cedar': `
        permit(principal, action == Action::"issue", resource == Grant::"reports-read");
        permit(principal, action == Action::"issue", resource == Grant::"prod-deploy");`,
    });
    expect(Object.keys(readPolicies(dir)).sort()).toEqual(['b.cedar:0', 'b.cedar:1', 'named']);
    const engine = createPolicyEngine(dir);
    expect(engine.evaluate(ask({ identity: github(), grant: 'prod-deploy' })).reason).toBe(
      'permitted by b.cedar:1',
    );
    expect(engine.evaluate(ask({ identity: github() })).reason).toBe('permitted by named');
  });

  it('refuses two policies with the same @id, naming the file', () => {
    const dir = policyDir({
      'a.cedar': `@id("same") permit(principal, action, resource);`,
      'b.cedar': `@id("same") forbid(principal, action, resource);`,
    });
    expect(() => createPolicyEngine(dir)).toThrow(PolicyLoadError);
    expect(() => createPolicyEngine(dir)).toThrow(/b\.cedar: two policies with id "same"/);
  });

  it('reads only .cedar files', () => {
    const dir = policyDir({
      'z.cedar': `permit(principal, action == Action::"issue", resource == Grant::"artifacts-api");`,
      'notes.cedar.bak': `permit(principal, action, resource);`,
    });
    const engine = createPolicyEngine(dir);
    expect(engine.policyCount).toBe(1);
    expect(engine.evaluate(ask({ identity: github(), grant: 'prod-deploy' })).allowed).toBe(false);
  });

  it('loads a single file when the location is a file', () => {
    const dir = policyDir({
      'only.cedar': `permit(principal, action == Action::"issue", resource == Grant::"artifacts-api");`,
    });
    const engine = createPolicyEngine(path.join(dir, 'only.cedar'));
    expect(engine.evaluate(ask({ identity: github() })).reason).toBe('permitted by only.cedar:0');
  });
});

describe('loading and reloading', () => {
  const PERMIT = `@id("ops-read") permit(principal, action == Action::"issue", resource == Grant::"artifacts-api") when { context.task.ticket like "OPS-*" };`;
  const BROKEN = `@id("half-written") permit(principal, action == Action::"issue", resource) when { principal.issuer == };`;

  it('refuses a policy set with a syntax error, naming the file', () => {
    const dir = policyDir({ 'good.cedar': PERMIT, 'broken.cedar': BROKEN });
    let thrown: unknown;
    try {
      createPolicyEngine(dir);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(PolicyLoadError);
    expect((thrown as Error).message).toContain(path.join(dir, 'broken.cedar'));
  });

  it('keeps the policies in force when a reload finds a broken file, and throws', () => {
    const dir = policyDir({ 'good.cedar': PERMIT });
    const engine = createPolicyEngine(dir);
    const request = ask({ identity: github() });
    expect(engine.evaluate(request).allowed).toBe(true);

    // A broken file beside an edit that would deny: neither takes effect, the set is all or nothing.
    writeFileSync(path.join(dir, 'good.cedar'), `@id("deny-all") forbid(principal, action, resource);`);
    writeFileSync(path.join(dir, 'broken.cedar'), BROKEN);
    expect(() => engine.reload()).toThrow(PolicyLoadError);
    expect(() => engine.reload()).toThrow(/broken\.cedar/);
    expect(engine.policyCount).toBe(1);
    expect(engine.evaluate(request)).toEqual({
      allowed: true,
      policyIds: ['ops-read'],
      reason: 'permitted by ops-read',
    });

    // Once the broken file is gone, the edit does take effect.
    rmSync(path.join(dir, 'broken.cedar'));
    expect(engine.reload()).toEqual({ policyCount: 1 });
    expect(engine.evaluate(request)).toEqual({
      allowed: false,
      policyIds: ['deny-all'],
      reason: 'forbidden by deny-all',
    });
  });

  it('changes decisions when a reload picks up a new or edited file', () => {
    const dir = policyDir({});
    const engine = createPolicyEngine(dir);
    const request = ask({ identity: github() });
    expect(engine.evaluate(request).allowed).toBe(false);

    writeFileSync(path.join(dir, 'ops.cedar'), PERMIT);
    expect(engine.reload()).toEqual({ policyCount: 1 });
    expect(engine.evaluate(request).reason).toBe('permitted by ops-read');

    writeFileSync(
      path.join(dir, 'cap.cedar'),
      `@id("cap") forbid(principal, action, resource) when { context.activeLeases >= 1 };`,
    );
    expect(engine.reload()).toEqual({ policyCount: 2 });
    expect(engine.evaluate(ask({ identity: github(), task: { activeLeases: 1 } })).reason).toBe(
      'forbidden by cap',
    );
    expect(engine.evaluate(request).allowed).toBe(true);
  });

  it('gives each engine its own policy set', () => {
    const allowing = engineWith({ 'p.cedar': PERMIT });
    const denying = engineWith({});
    const request = ask({ identity: github() });
    expect(allowing.evaluate(request).allowed).toBe(true);
    expect(denying.evaluate(request).allowed).toBe(false);
    denying.reload();
    expect(allowing.evaluate(request).allowed).toBe(true);
  });
});

describe('evaluation errors', () => {
  it('denies when the only permit errors on a claim the token lacks, and says so in the reason', () => {
    const engine = engineWith({
      'env.cedar': `@id("needs-environment") permit(principal, action == Action::"issue", resource) when { principal.claims.environment == "prod" };`,
    });
    const decision = engine.evaluate(ask({ identity: kubernetes() }));
    expect(decision.allowed).toBe(false);
    expect(decision.reason).toMatch(/^no permit policy matched \(errors: needs-environment: /);
  });
});

describe('step-up: allow, step-up or deny (context.approved)', () => {
  const engine = engineWith({
    'p.cedar': `
permit(principal, action == Action::"issue", resource == Grant::"artifacts-api");
permit(principal, action == Action::"issue", resource == Grant::"prod-deploy")
when { context.approved || context.ttlSeconds <= 60 };
forbid(principal, action == Action::"issue", resource == Grant::"prod-deploy") when { context.ttlSeconds > 900 };
`,
  });
  const decide = (grant: string, ttlSeconds: number, approvalRequired: boolean, approvedPresented: boolean) =>
    decideIssue(
      engine,
      issueRequest(
        github(),
        task(github()),
        GRANTS[grant] as GrantFacts,
        { ttlSeconds, approved: false },
        NOW_MS,
      ),
      { approvalRequired, approvedPresented },
    ).kind;

  it.each([
    ['a forbid holds even with an approval in hand', 'prod-deploy', 1200, false, true, 'deny'],
    [
      'a forbid holds: no step-up is offered for what no approval could permit',
      'prod-deploy',
      1200,
      false,
      false,
      'deny',
    ],
    ['no permit for the grant at all', 'db-export', 60, true, false, 'deny'],
    ['the policy permits only when approved: step-up', 'prod-deploy', 600, false, false, 'step-up'],
    [
      'the grant requires approval though the policy permits: step-up',
      'artifacts-api',
      60,
      true,
      false,
      'step-up',
    ],
    ['an approval in hand, and the policy permits it approved', 'prod-deploy', 600, false, true, 'allow'],
    ['within what the policy permits unapproved', 'prod-deploy', 60, false, false, 'allow'],
    ['an ordinary grant', 'artifacts-api', 600, false, false, 'allow'],
  ] as const)('%s', (_label, grant, ttlSeconds, required, presented, expected) => {
    expect(decide(grant, ttlSeconds, required, presented)).toBe(expected);
  });
});
