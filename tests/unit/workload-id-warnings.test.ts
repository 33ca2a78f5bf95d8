import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createPolicyEngine, workloadIdWarnings } from '../../src/policy/cedar-engine';

/** A policy naming a workload by subject alone matches nobody now: config check and start-up say so. */
describe('Workload ids without an issuer', () => {
  const engineWith = (text: string) => {
    const dir = mkdtempSync(path.join(tmpdir(), 'wl-ids-'));
    writeFileSync(path.join(dir, 'p.cedar'), text);
    return createPolicyEngine(dir);
  };

  it('names each policy that names a Workload without a configured issuer, in scope or condition', () => {
    const engine = engineWith(`
@id("old-form")
permit(principal == Workload::"release-agent", action, resource);
@id("in-condition")
permit(principal, action, resource) when { principal == Workload::"repo:octo-org/octo-repo:ref:refs/heads/main" };
@id("new-form")
permit(principal == Workload::"dev/release-agent", action, resource);
@id("set")
permit(principal, action, resource) when { [Workload::"dev/a", Workload::"b"].contains(principal) };
`);
    const warnings = workloadIdWarnings(engine.workloadIds, ['dev', 'github-actions']);
    expect(
      warnings.map((warning) => /^policy (\S+) names Workload::"([^"]+)"/.exec(warning)?.slice(1)),
    ).toEqual([
      ['old-form', 'release-agent'],
      ['in-condition', 'repo:octo-org/octo-repo:ref:refs/heads/main'],
      ['set', 'b'],
    ]);
    expect(warnings[0]).toContain('Workload::"<issuer name>/<subject>"');
  });

  it('says nothing of policies that name workloads with their issuer, or none at all', () => {
    const engine = engineWith(`
permit(principal == Workload::"github-actions/repo:octo-org/octo-repo:environment:prod", action, resource);
permit(principal, action, resource) when { principal.issuer == "dev" };
`);
    expect(workloadIdWarnings(engine.workloadIds, ['dev', 'github-actions'])).toEqual([]);
  });
});
