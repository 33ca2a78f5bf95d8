import { execFile, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { createTestIssuer, tempDir } from '../support/fixtures';

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.join(ROOT, 'bin/tasklease.js');
const BUILT = path.join(ROOT, 'dist/cli/main.js');

const newestMtimeMs = (dir: string): number =>
  Math.max(
    0,
    ...readdirSync(dir, { withFileTypes: true }).map((entry) => {
      const full = path.join(dir, entry.name);
      return entry.isDirectory() ? newestMtimeMs(full) : statSync(full).mtimeMs;
    }),
  );

/** `npm test` builds before Jest starts; run alone, this file rebuilds dist/ when it is missing or older than src/. */
function ensureBuilt(): void {
  let builtMs = 0;
  try {
    builtMs = statSync(BUILT).mtimeMs;
  } catch {
    /* not built yet */
  }
  if (builtMs >= newestMtimeMs(path.join(ROOT, 'src'))) return;
  const tsc = spawnSync(
    process.execPath,
    [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'],
    { cwd: ROOT, encoding: 'utf8' },
  );
  if (tsc.status !== 0) throw new Error(`build failed:\n${tsc.stdout}${tsc.stderr}`);
}

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The binary under the Node that runs the tests, with nothing from the environment but PATH and the config. */
const runCli = (args: string[], configFile: string) =>
  new Promise<Outcome>((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      {
        cwd: path.dirname(configFile),
        env: { PATH: process.env.PATH ?? '', TASKLEASE_CONFIG: configFile },
        encoding: 'utf8',
        timeout: 30_000,
      },
      (error, stdout, stderr) =>
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr }),
    );
  });

const POLICIES = `
@id("declare-with-ticket")
permit(principal, action == Action::"declareTask", resource) when { context.task.ticket != "" };

@id("gha-artifacts-ops")
permit(principal, action == Action::"issue", resource == Grant::"artifacts-api")
when { principal.issuer == "github-actions" && principal.claims.repository == "octo-org/octo-repo"
       && context.task.ticket like "OPS-*" && context.ttlSeconds <= 900 };

@id("k8s-agents")
permit(principal, action == Action::"issue", resource == Grant::"artifacts-api")
when { principal.kind == "kubernetes" && principal.claims.namespace == "agents" };

@id("cap-per-task")
forbid(principal, action == Action::"issue", resource) when { context.activeLeases >= 5 };
`;

// Every config this file uses lives under one folder, known before the tests are collected.
const DIR = tempDir('policy-cli');
const CONFIG = path.join(DIR, 'main', 'tasklease.yaml');
const BROKEN_POLICY_CONFIG = path.join(DIR, 'broken-policy', 'tasklease.yaml');
const invalidConfig = (name: string) => path.join(DIR, 'invalid', `${name}.yaml`);

const GHA = [
  'policy',
  'check',
  '--issuer',
  'github-actions',
  '--subject',
  'repo:octo-org/octo-repo:environment:prod',
  '--grant',
  'artifacts-api',
];
const GHA_CLAIMS = ['--claim', 'repository=octo-org/octo-repo', '--claim', 'run_id=6123456789'];
const K8S = (namespace: string) => [
  'policy',
  'check',
  '--issuer',
  'cluster-a',
  '--subject',
  `system:serviceaccount:${namespace}:planner`,
];

const DECISIONS: [label: string, args: string[], code: number, line: string][] = [
  [
    'an allowed issue',
    [...GHA, ...GHA_CLAIMS, '--ticket', 'OPS-12', '--ttl', '600'],
    0,
    'ALLOW: permitted by gha-artifacts-ops',
  ],
  [
    'a requested TTL above the grant maximum, clamped first as the broker does',
    [...GHA, ...GHA_CLAIMS, '--ticket', 'OPS-12', '--ttl', '3600'],
    0,
    'ALLOW: permitted by gha-artifacts-ops',
  ],
  [
    'a ticket that is not OPS-*',
    [...GHA, ...GHA_CLAIMS, '--ticket', 'DEV-3'],
    3,
    'DENY: no permit policy matched',
  ],
  [
    'another repository',
    [...GHA, '--claim', 'repository=octo-org/fork', '--claim', 'run_id=1', '--ticket', 'OPS-12'],
    3,
    'DENY: no permit policy matched',
  ],
  [
    'a task at its lease cap',
    [...GHA, ...GHA_CLAIMS, '--ticket', 'OPS-12', '--active-leases', '5'],
    3,
    'DENY: forbidden by cap-per-task',
  ],
  [
    'a Kubernetes service account, namespace derived from its subject',
    [...K8S('agents'), '--grant', 'artifacts-api'],
    0,
    'ALLOW: permitted by k8s-agents',
  ],
  [
    'a Kubernetes service account in another namespace',
    [...K8S('default'), '--grant', 'artifacts-api'],
    3,
    'DENY: no permit policy matched',
  ],
  [
    'declareTask with a ticket',
    [...K8S('agents'), '--action', 'declareTask', '--ticket', 'OPS-1'],
    0,
    'ALLOW: permitted by declare-with-ticket',
  ],
  [
    'declareTask without a ticket',
    [...K8S('agents'), '--action', 'declareTask'],
    3,
    'DENY: no permit policy matched',
  ],
];

const JSON_RUNS: [label: string, args: string[], code: number, decision: unknown][] = [
  [
    'allowed',
    [...GHA, ...GHA_CLAIMS, '--ticket', 'OPS-12', '--json'],
    0,
    { allowed: true, policyIds: ['gha-artifacts-ops'], reason: 'permitted by gha-artifacts-ops' },
  ],
  [
    'forbidden',
    [...GHA, ...GHA_CLAIMS, '--ticket', 'OPS-12', '--active-leases', '7', '--json'],
    3,
    { allowed: false, policyIds: ['cap-per-task'], reason: 'forbidden by cap-per-task' },
  ],
];

const ERRORS: [label: string, args: string[], message: RegExp][] = [
  [
    'an issuer the config does not name',
    ['policy', 'check', '--issuer', 'gitlab', '--subject', 'x', '--grant', 'artifacts-api'],
    /^tasklease: no issuer named gitlab in the config\n$/,
  ],
  [
    'a grant the config does not name',
    [...GHA, ...GHA_CLAIMS, '--grant', 'db-export'],
    /^tasklease: no grant named db-export in the config\n$/,
  ],
  [
    'an identity the broker would refuse (no run_id)',
    [...GHA, '--claim', 'repository=octo-org/octo-repo'],
    /^tasklease: the broker would refuse this github-actions identity: .*run_id/,
  ],
];

const INVALID_CONFIGS: [label: string, edit: (input: any) => unknown, field: string][] = [
  [
    'a grant without maxTtlSeconds',
    (input) => ({ ...input, grants: { 'artifacts-api': { provider: 'jwt', audience: 'x' } } }),
    'grants.artifacts-api.maxTtlSeconds',
  ],
  [
    'an issuer with both jwksUri and jwksFile',
    (input) => ({ ...input, issuers: [{ ...input.issuers[0], jwksUri: 'https://x.test/jwks' }] }),
    'issuers.0.jwksUri',
  ],
  [
    'an unknown issuer kind',
    (input) => ({ ...input, issuers: [{ ...input.issuers[0], kind: 'jenkins' }] }),
    'issuers.0.kind',
  ],
];

const jobs: [key: string, args: string[], config: string][] = [
  ...DECISIONS.map(([label, args]) => [`decision:${label}`, args, CONFIG] as [string, string[], string]),
  ...JSON_RUNS.map(([label, args]) => [`json:${label}`, args, CONFIG] as [string, string[], string]),
  ...ERRORS.map(([label, args]) => [`error:${label}`, args, CONFIG] as [string, string[], string]),
  ['broken-policy', [...GHA, ...GHA_CLAIMS, '--ticket', 'OPS-12'], BROKEN_POLICY_CONFIG],
  ['config-ok', ['config', 'check', CONFIG], CONFIG],
  ...INVALID_CONFIGS.map(
    ([label]) =>
      [`invalid:${label}`, ['config', 'check', invalidConfig(label)], CONFIG] as [string, string[], string],
  ),
];

describe('tasklease policy check and config check (the real binary)', () => {
  const outcomes = new Map<string, Outcome>();
  const outcome = (key: string) => {
    const found = outcomes.get(key);
    if (!found) throw new Error(`no run for ${key}`);
    return found;
  };

  // Each run is a fresh Node process (~1 s of start-up), so they all run here, a few at a time, and the tests read the results.
  beforeAll(async () => {
    ensureBuilt();
    const github = await createTestIssuer({
      name: 'github-actions',
      kind: 'github-actions',
      iss: 'https://token.actions.githubusercontent.com',
    });
    const cluster = await createTestIssuer({ name: 'cluster-a', kind: 'kubernetes' });
    const config = {
      issuers: [github.config, cluster.config],
      grants: {
        'artifacts-api': {
          provider: 'jwt',
          audience: 'https://artifacts.internal',
          scopes: ['artifacts:read'],
          maxTtlSeconds: 600,
        },
      },
      policies: './policies',
    };
    const writeConfig = (file: string, input: unknown, policies?: string) => {
      mkdirSync(path.dirname(file), { recursive: true });
      writeFileSync(file, YAML.stringify(input));
      if (policies === undefined) return;
      mkdirSync(path.join(path.dirname(file), 'policies'));
      writeFileSync(path.join(path.dirname(file), 'policies', 'main.cedar'), policies);
    };
    writeConfig(CONFIG, config, POLICIES);
    writeConfig(
      BROKEN_POLICY_CONFIG,
      config,
      'permit(principal, action, resource) when { principal.issuer == };',
    );
    for (const [label, edit] of INVALID_CONFIGS) writeConfig(invalidConfig(label), edit(config));

    const queue = [...jobs];
    const runner = async () => {
      for (let job = queue.shift(); job; job = queue.shift())
        outcomes.set(job[0], await runCli(job[1], job[2]));
    };
    await Promise.all([runner(), runner(), runner(), runner()]);
  }, 120_000);

  it.each(DECISIONS)('%s', (label, _args, code, line) => {
    const result = outcome(`decision:${label}`);
    expect(result.stdout).toBe(`${line}\n`);
    expect(result.code).toBe(code);
  });

  it.each(JSON_RUNS)(
    'prints the decision as JSON with --json (%s), exit code unchanged',
    (label, _args, code, decision) => {
      const result = outcome(`json:${label}`);
      expect(JSON.parse(result.stdout)).toEqual(decision);
      expect(result.code).toBe(code);
    },
  );

  it.each(ERRORS)('exits 1 with a message for %s', (label, _args, message) => {
    const result = outcome(`error:${label}`);
    expect(result.stderr).toMatch(message);
    expect(result.stdout).toBe('');
    expect(result.code).toBe(1);
  });

  it('exits 1 naming the file when a policy does not parse', () => {
    const result = outcome('broken-policy');
    expect(result.stderr).toContain(path.join(path.dirname(BROKEN_POLICY_CONFIG), 'policies', 'main.cedar'));
    expect(result.code).toBe(1);
  });

  it('config check prints ok with counts for a valid file', () => {
    const result = outcome('config-ok');
    expect(result.stdout).toBe('ok: 2 issuer(s), 1 grant(s), 4 polic(ies)\n');
    expect(result.code).toBe(0);
  });

  it.each(INVALID_CONFIGS)('config check exits non-zero naming the field for %s', (label, _edit, field) => {
    const result = outcome(`invalid:${label}`);
    expect(result.stderr).toContain(`${field}: `);
    expect(result.stdout).toBe('');
    expect(result.code).toBe(1);
  });
});
