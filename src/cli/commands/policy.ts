import type { Command } from 'commander';
import { loadConfigFile } from '../../config/load-config';
import type { Env } from '../../config/env';
import type { Identity } from '../../domain/types';
import { applyPreset } from '../../identity/claim-presets';
import { declareTaskRequest, issueRequest, type EntitlementFacts } from '../../policy/vocabulary';
import { EXIT } from '../exit-codes';
import { collectPairs, printJson } from '../output';

export function registerPolicyCommands(program: Command, env: () => Env) {
  const policy = program.command('policy').description('work with Cedar policies');
  policy
    .command('check')
    .description('dry-run a request against the configured policies (no broker needed); exit 0 allow, 3 deny')
    .requiredOption('--issuer <name>', 'issuer name from the config')
    .requiredOption('--subject <subject>')
    .option('--action <action>', 'issue | declareTask', 'issue')
    .option('--grant <name>', 'the grant (for issue)')
    .option('--claim <key=value>', 'a token claim (repeatable)', collectPairs, {})
    .option('--purpose <text>', 'task purpose', 'policy check')
    .option('--ticket <text>', 'task ticket', '')
    .option('--ref <text>', 'task ref', '')
    .option('--ttl <seconds>', 'requested TTL', '600')
    .option('--active-leases <n>', 'live leases already in the task', '0')
    .option('--approved', 'as if a step-up approval were presented (context.approved)')
    .option('--entitled', 'as if the workload held an active entitlement to the grant (context.entitled)')
    .option('--entitlement-owner <owner>', 'with --entitled: context.entitlement.owner', 'policy-check')
    .option(
      '--enrolment-owner <owner>',
      'with --entitled: context.entitlement.enrolment.owner',
      'policy-check',
    )
    .option(
      '--entitlement-expires-in <seconds>',
      'with --entitled: context.entitlement.expiresInSeconds',
      '86400',
    )
    .option('--json', 'print JSON')
    .action(async (options) => {
      const config = loadConfigFile(env().TASKLEASE_CONFIG ?? 'tasklease.yaml');
      const issuer = config.issuers.find((entry) => entry.name === options.issuer);
      if (!issuer) throw new Error(`no issuer named ${options.issuer} in the config`);
      // Cedar's WASM loads on demand, so other commands start without it.
      const { createPolicyEngine } = await import('../../policy/cedar-engine');
      const engine = createPolicyEngine(config.policies);
      const nowMs = Date.now();
      // The claims the broker would see: the kind's preset adds the derived claims (namespace, trust_domain, ...).
      const claims: Record<string, string> = { sub: options.subject, ...options.claim };
      const presetProblem = applyPreset(issuer.kind, claims, {});
      if (presetProblem)
        throw new Error(
          `the broker would refuse this ${issuer.kind} identity: ${presetProblem} (add it with --claim)`,
        );
      const identity: Identity = {
        issuer: issuer.name,
        kind: issuer.kind,
        subject: options.subject,
        claims,
        tokenSha256: '',
        expiresAtMs: nowMs + 600_000,
      };
      const task = {
        id: 'policy-check',
        issuer: issuer.name,
        subject: options.subject,
        kind: issuer.kind,
        purpose: options.purpose,
        ticket: options.ticket,
        ref: options.ref,
        grants: [],
        createdAtMs: nowMs,
        expiresAtMs: nowMs + 3_600_000,
        state: 'open' as const,
        activeLeases: Number(options.activeLeases),
      };
      let request;
      // context.ttlSeconds is the effective TTL, clamped as the broker clamps it.
      if (options.action === 'declareTask') {
        request = declareTaskRequest(
          identity,
          task,
          Math.min(Number(options.ttl), config.broker.maxTaskTtlSeconds),
          nowMs,
        );
      } else {
        const grant = Object.hasOwn(config.grants, options.grant as string)
          ? config.grants[options.grant as string]
          : undefined;
        if (!grant) throw new Error(`no grant named ${options.grant} in the config`);
        request = issueRequest(
          identity,
          task,
          { name: options.grant, ...grant },
          {
            ttlSeconds: Math.min(Number(options.ttl), grant.maxTtlSeconds),
            approved: Boolean(options.approved),
            entitlement: options.entitled ? entitlementOf(options) : null,
          },
          nowMs,
        );
      }
      const decision = engine.evaluate(request);
      if (options.json) printJson(decision);
      else process.stdout.write(`${decision.allowed ? 'ALLOW' : 'DENY'}: ${decision.reason}\n`);
      if (!decision.allowed) process.exitCode = EXIT.policyDenied;
    });
}

/** The entitlement `--entitled` stands for, as the broker would give it to Cedar. */
function entitlementOf(options: Record<string, string>): EntitlementFacts {
  return {
    id: 'policy-check',
    owner: options.entitlementOwner as string,
    purpose: 'policy check',
    expiresInSeconds: Number(options.entitlementExpiresIn),
    enrolment: { id: 'policy-check', owner: options.enrolmentOwner as string },
  };
}
