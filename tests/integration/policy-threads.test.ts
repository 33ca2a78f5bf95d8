import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { createPolicyEngine } from '../../src/policy/cedar-engine';
import { createPolicy, type Policy } from '../../src/policy/policy-threads';
import { issueRequest, type GrantFacts } from '../../src/policy/vocabulary';
import type { Identity } from '../../src/domain/types';
import { tempDir } from '../support/fixtures';

const POLICIES = `
@id("ops-read") permit(principal, action == Action::"issue", resource == Grant::"read")
  when { context.task.ticket like "OPS-*" && principal.claims.repository == "acme/api" };
@id("deploy-approved") permit(principal, action == Action::"issue", resource == Grant::"deploy")
  when { context.approved };
@id("no-long") forbid(principal, action == Action::"issue", resource) when { context.ttlSeconds > 900 };
`;
const PERMIT_ALL_READS = `@id("all-read") permit(principal, action == Action::"issue", resource == Grant::"read");`;

const grant = (name: string): GrantFacts => ({ name, provider: 'jwt', sensitivity: 'low', approval: 'none' });
const request = (
  subject: string,
  grantName: string,
  ticket: string,
  repository: string,
  ttlSeconds: number,
) =>
  issueRequest(
    {
      issuer: 'gh',
      kind: 'github-actions',
      subject,
      claims: { repository },
      tokenSha256: '',
      expiresAtMs: 0,
    } as Identity,
    {
      id: 't',
      issuer: 'gh',
      subject,
      kind: 'github-actions',
      purpose: 'p',
      ticket,
      ref: '',
      grants: [],
      createdAtMs: 0,
      expiresAtMs: 1,
      state: 'open',
      activeLeases: 0,
    },
    grant(grantName),
    { ttlSeconds, approved: false },
    0,
  );
const CASES = [
  request('s', 'read', 'OPS-1', 'acme/api', 60),
  request('s', 'read', 'DEV-1', 'acme/api', 60),
  request('s', 'read', 'OPS-1', 'acme/web', 60),
  request('s', 'read', 'OPS-1', 'acme/api', 3600),
  request('s', 'deploy', 'OPS-1', 'acme/api', 60),
  request('s', 'other', 'OPS-1', 'acme/api', 60),
];

describe('Cedar on policy threads', () => {
  let dir: string;
  let file: string;
  const open: Policy[] = [];
  // A thread that fails to start would leave every decision to the event loop, and these tests blind to it.
  let unexpectedExits: string[] = [];
  const policyOn = (
    threads: number,
    extra: Parameters<typeof createPolicy>[1] = {
      threads,
      onThreadExit: (error) => unexpectedExits.push(error.message),
    },
  ) => {
    const policy = createPolicy(dir, { ...extra, threads });
    open.push(policy);
    return policy;
  };
  beforeEach(() => {
    dir = tempDir('policy-threads');
    file = path.join(dir, 'p.cedar');
    writeFileSync(file, POLICIES);
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((policy) => policy.close()));
    expect(unexpectedExits).toEqual([]);
    unexpectedExits = [];
  });

  it('decides exactly as the engine on the event loop does, for single decisions and for issuance', async () => {
    const engine = createPolicyEngine(dir);
    const threaded = policyOn(2);
    for (const options of [
      { approvalRequired: false, approvedPresented: false },
      { approvalRequired: true, approvedPresented: false },
      { approvalRequired: false, approvedPresented: true },
    ]) {
      for (const asked of CASES) {
        expect(await threaded.evaluate(asked)).toEqual(engine.evaluate(asked));
        const { decideIssue } = await import('../../src/policy/issue-decision');
        expect(await threaded.decideIssue(asked, options)).toEqual(decideIssue(engine, asked, options));
      }
    }
    // The step-up case is the one that needs two evaluations on one set.
    expect(
      (
        await threaded.decideIssue(CASES[4] as (typeof CASES)[0], {
          approvalRequired: false,
          approvedPresented: false,
        })
      ).kind,
    ).toBe('step-up');
    expect(threaded.policyCount).toBe(3);
    expect(threaded.readsContext('approved')).toBe(true);
    expect(threaded.readsContext('activeLeases')).toBe(false);
  });

  it('reloads every thread, and a bad edit changes nothing anywhere', async () => {
    const threaded = policyOn(2);
    const dev = CASES[1] as (typeof CASES)[0];
    expect((await threaded.evaluate(dev)).allowed).toBe(false);
    writeFileSync(file, PERMIT_ALL_READS);
    await expect(threaded.reload()).resolves.toEqual({ policyCount: 1 });
    // Both threads: more requests in flight than one thread would take.
    const after = await Promise.all(Array.from({ length: 50 }, () => threaded.evaluate(dev)));
    expect(after.every((decision) => decision.reason === 'permitted by all-read')).toBe(true);

    writeFileSync(file, 'permit(principal, action, resource) when { context.');
    await expect(threaded.reload()).rejects.toThrow();
    const still = await Promise.all(Array.from({ length: 50 }, () => threaded.evaluate(dev)));
    expect(still.every((decision) => decision.reason === 'permitted by all-read')).toBe(true);
    expect(threaded.policyCount).toBe(1);
  });

  it('a thread that dies mid-decision loses no request: what it held is decided here, and it is replaced', async () => {
    // A thread script that dies (process.exit in a worker ends the thread) on a request for subject "crash".
    const crashing = path.join(dir, 'crashing-thread.js');
    const real = path.resolve(__dirname, '../../dist/policy/policy-thread.js');
    writeFileSync(
      crashing,
      `const { parentPort } = require('node:worker_threads');
       parentPort.on('message', (m) => { if (m.request && m.request.principal.id === 'gh/crash') process.exit(3); });
       require(${JSON.stringify(real)});`,
    );
    const exits: string[] = [];
    const threaded = policyOn(1, {
      threads: 1,
      threadFile: crashing,
      onThreadExit: (error) => exits.push(error.message),
    });
    const engine = createPolicyEngine(dir);
    const ordinary = CASES[0] as (typeof CASES)[0];
    const crash = request('crash', 'read', 'OPS-1', 'acme/api', 60);
    // The crash and 20 ordinary requests in flight together on the one thread.
    const answers = await Promise.all([
      ...Array.from({ length: 10 }, () => threaded.evaluate(ordinary)),
      threaded.evaluate(crash),
      ...Array.from({ length: 10 }, () => threaded.evaluate(ordinary)),
    ]);
    expect(answers[10]).toEqual(engine.evaluate(crash));
    expect(answers.filter((_, index) => index !== 10)).toEqual(Array(20).fill(engine.evaluate(ordinary)));
    expect(exits).toEqual(['policy thread exited with code 3']);
    // Meanwhile decided on the event loop; after a second, a new thread decides again.
    expect(await threaded.evaluate(ordinary)).toEqual(engine.evaluate(ordinary));
    await new Promise((resolve) => setTimeout(resolve, 1300));
    await Promise.all([threaded.evaluate(crash), threaded.evaluate(crash)]);
    expect(exits).toHaveLength(2);
  });

  it('a thread that hangs is ended after 5 s, and what it held is decided on the event loop', async () => {
    const hanging = path.join(dir, 'hanging-thread.js');
    const real = path.resolve(__dirname, '../../dist/policy/policy-thread.js');
    writeFileSync(
      hanging,
      `const { parentPort } = require('node:worker_threads');
       parentPort.on('message', (m) => { if (m.request && m.request.principal.id === 'gh/hang') for (;;); });
       require(${JSON.stringify(real)});`,
    );
    const exits: string[] = [];
    const threaded = policyOn(1, {
      threads: 1,
      threadFile: hanging,
      onThreadExit: (error) => exits.push(error.message),
    });
    const engine = createPolicyEngine(dir);
    const hang = request('hang', 'read', 'OPS-1', 'acme/api', 60);
    const startedMs = Date.now();
    expect(await threaded.evaluate(hang)).toEqual(engine.evaluate(hang));
    expect(Date.now() - startedMs).toBeGreaterThanOrEqual(5000);
    expect(exits).toHaveLength(1);
  }, 15_000);

  it('with no threads, decides on the event loop', async () => {
    const threaded = policyOn(0);
    const engine = createPolicyEngine(dir);
    for (const asked of CASES) expect(await threaded.evaluate(asked)).toEqual(engine.evaluate(asked));
  });
});
